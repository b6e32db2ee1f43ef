"""NGINX (``/usr/sbin/nginx``) running the operators' example config ``deploy/nginx/nginx.conf``.

The file is loaded as text and only these lines are rewritten (each must occur exactly once,
so a config that drifts away from them fails loudly instead of being tested half-rewritten):

* ``listen 8000;`` -> ``listen 127.0.0.1:<free port>;``
* ``server 127.0.0.1:8181;`` (upstream ``paygress``) -> the given Paygress forward-auth address;
* ``server 127.0.0.1:8080;`` (upstream ``app``) -> the given upstream address;
* ``worker_processes ...;`` -> ``worker_processes 1;``, ``access_log ...;`` -> the workdir;

and, when present, ``proxy_cache_path <dir>`` -> a directory in the workdir; and the
process-level directives a test run needs are prepended: ``daemon off`` (so the
master stays our child), ``pid``, ``error_log``, the temp paths inside the workdir, and
``user root`` when running as root (the workers would otherwise drop to ``nobody``, which
cannot write the 0700 temp dir).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .procs import (
    LOOPBACK,
    REPO_ROOT,
    ManagedProcess,
    free_port,
    wait_for_http,
    wait_for_port,
)
from .procs import log_tail as read_log_tail

NGINX_BIN = Path("/usr/sbin/nginx")
DEFAULT_CONFIG = REPO_ROOT / "deploy" / "nginx" / "nginx.conf"


def _replace_once(text: str, pattern: str, replacement: str, what: str) -> str:
    """Replace the one match of ``pattern`` (whose group 1 is the indentation) with
    ``replacement``, taken literally."""
    new, count = re.subn(pattern, lambda m: m.group(1) + replacement, text, flags=re.MULTILINE)
    if count != 1:
        raise ValueError(f"expected exactly one {what} ({pattern!r}), found {count}")
    return new


def render_config(
    source: str,
    *,
    workdir: Path,
    port: int,
    paygress: tuple[str, int],
    upstream: tuple[str, int],
    as_root: bool,
) -> str:
    """The deploy config with ports, addresses and paths rewritten for a test run."""
    temp = workdir / "temp"
    temp_paths = "".join(
        f"\n    {directive} {temp / name};"
        for directive, name in (
            ("client_body_temp_path", "client_body"),
            ("proxy_temp_path", "proxy"),
            ("fastcgi_temp_path", "fastcgi"),
            ("uwsgi_temp_path", "uwsgi"),
            ("scgi_temp_path", "scgi"),
        )
    )
    text = source
    for pattern, replacement, what in (
        (r"^(\s*)listen\s+8000\s*;", f"listen {LOOPBACK}:{port};", "listen"),
        (
            r"^(\s*)server\s+127\.0\.0\.1:8181\s*;",
            f"server {paygress[0]}:{paygress[1]};",
            "paygress upstream server",
        ),
        (
            r"^(\s*)server\s+127\.0\.0\.1:8080\s*;",
            f"server {upstream[0]}:{upstream[1]};",
            "app upstream server",
        ),
        (r"^(\s*)worker_processes\s+\S+\s*;", "worker_processes 1;", "worker_processes"),
        (
            r"^(\s*)access_log\s+(?!off\s*;)\S+\s*;",
            f"access_log {workdir / 'access.log'};",
            "http-level access_log",
        ),
        (r"^()http\s*\{", "http {" + temp_paths, "http block"),
    ):
        text = _replace_once(text, pattern, replacement, what)
    text = re.sub(
        r"^(\s*proxy_cache_path\s+)\S+",
        lambda m: m.group(1) + str(workdir / "cache"),
        text,
        flags=re.M,
    )
    header = [
        "# --- added by tests/peers/nginx.py ---",
        "daemon off;",
        f"pid {workdir / 'nginx.pid'};",
        f"error_log {workdir / 'error.log'} info;",
    ]
    if as_root:
        header.append("user root;")
    return "\n".join(header) + "\n\n" + text


class NginxProxy(ManagedProcess):
    """``await NginxProxy(workdir, upstream=(host, port), paygress=(host, port)).start()``.

    ``url`` is the listener (``http://127.0.0.1:<port>``); ``paygress`` is Paygress's
    ``listen.http`` address. Its logs: ``error_log_path``, ``access_log_path``.
    """

    name = "nginx"
    startup_timeout = 15.0

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        upstream: tuple[str, int],
        paygress: tuple[str, int],
        port: int | None = None,
        config_path: str | Path = DEFAULT_CONFIG,
        binary: str | Path = NGINX_BIN,
        name: str | None = None,
    ) -> None:
        super().__init__(workdir, name=name)
        self.upstream = upstream
        self.paygress = paygress
        self.port = port if port is not None else free_port()
        self.config_path = Path(config_path)
        self.binary = Path(binary)
        self.rendered_path = self.workdir / f"{self.name}.conf"
        self.error_log_path = self.workdir / "error.log"
        self.access_log_path = self.workdir / "access.log"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def render_config(self) -> str:
        return render_config(
            self.config_path.read_text(encoding="utf-8"),
            workdir=self.workdir,
            port=self.port,
            paygress=self.paygress,
            upstream=self.upstream,
            as_root=os.geteuid() == 0,
        )

    def prepare(self) -> None:
        (self.workdir / "temp").mkdir(exist_ok=True)
        self.rendered_path.write_text(self.render_config(), encoding="utf-8")

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "-p",
            str(self.workdir),
            "-c",
            str(self.rendered_path),
            "-e",
            str(self.error_log_path),
        ]

    async def wait_ready(self) -> None:
        await wait_for_port(LOOPBACK, self.port, timeout=self.startup_timeout, proc=self)
        await wait_for_http(f"{self.url}/healthz", timeout=5.0, proc=self)

    def log_tail(self, lines: int = 60) -> str:
        """NGINX writes little to stdout; its error log says why it did not start."""
        own = super().log_tail(lines)
        errors = read_log_tail(self.error_log_path, lines)
        return f"{own}\n--- {self.error_log_path} ---\n{errors}" if errors else own

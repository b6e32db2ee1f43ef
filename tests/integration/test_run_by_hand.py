"""README "Run it by hand": deploy/local/up starts the real mint, echo upstream, Paygress and
Envoy; the README's own snippet pays a 402 with nutshell's CLI; the wallet commands of the
README work on what was paid; deploy/local/down stops everything.

The scripts run as a newcomer runs them, moved to free ports and a temporary directory with
their PAYGRESS_LOCAL_* variables (deploy/local/env.sh), so that they run beside anything.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.peers.procs import free_port

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / "deploy" / "local"
README = REPO / "README.md"
SNIPPET_MARK = (
    "<!-- tests/integration/test_run_by_hand.py runs this block against deploy/local/up -->"
)


@dataclass
class Local:
    dir: Path
    env: dict[str, str]
    mint_port: int
    upstream_port: int
    envoy_port: int
    envoy_admin_port: int

    @property
    def mint_url(self) -> str:
        return f"http://127.0.0.1:{self.mint_port}"

    @property
    def envoy_url(self) -> str:
        return f"http://127.0.0.1:{self.envoy_port}"

    def run(self, *argv: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Runs a command in a session of its own: on a timeout, what it started goes too
        (e.g. a `cashu invoice` still waiting)."""
        with subprocess.Popen(
            argv,
            cwd=REPO,
            env={**self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        ) as proc:
            try:
                out, err = proc.communicate(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                raise
        return subprocess.CompletedProcess(argv, proc.returncode, out, err)

    def paygress(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """The README's `.venv/bin/paygress ... --config deploy/local/paygress.yaml`, told where
        the moved sockets are by Paygress's own environment overrides."""
        return self.run(
            str(REPO / ".venv" / "bin" / "paygress"),
            *argv,
            PAYGRESS_SOCKET=str(self.dir / "paygress.sock"),
            PAYGRESS_ADMIN_SOCKET=str(self.dir / "admin.sock"),
            PAYGRESS_STATE_DIR=str(self.dir / "state"),
            PAYGRESS_MINTS=self.mint_url,
        )


@pytest.fixture
def local(tmp: Path) -> Iterator[Local]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYGRESS_", "CASHU_"))}
    ports = [free_port() for _ in range(4)]
    env.update(
        HOME=str(tmp),  # nutshell's wallet would read ~/.cashu/.env
        PAYGRESS_LOCAL_DIR=str(tmp / "local"),
        PAYGRESS_LOCAL_MINT_PORT=str(ports[0]),
        PAYGRESS_LOCAL_UPSTREAM_PORT=str(ports[1]),
        PAYGRESS_LOCAL_ENVOY_PORT=str(ports[2]),
        PAYGRESS_LOCAL_ENVOY_ADMIN_PORT=str(ports[3]),
    )
    stack = Local(tmp / "local", env, *ports)
    try:
        yield stack
    finally:
        stack.run(str(LOCAL / "down"))  # whatever a failed test left running


def readme_snippet() -> str:
    """The shell block that follows SNIPPET_MARK in the README."""
    text = README.read_text(encoding="utf-8")
    match = re.search(re.escape(SNIPPET_MARK) + r"\n```sh\n(.*?)\n```", text, re.S)
    assert match, "the README's pay-from-the-402 block is gone"
    return match.group(1)


def pids(local: Local) -> dict[str, int]:
    return {
        path.stem: int(path.read_text())
        for path in local.dir.glob("*.pid")
        if path.read_text().strip().isdigit()
    }


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_run_by_hand_from_up_to_paid_to_down(local: Local) -> None:
    up = local.run(str(LOCAL / "up"))
    assert up.returncode == 0, up.stdout + up.stderr
    for name in ("mint", "upstream", "paygress", "envoy"):
        assert re.search(
            rf"^{name}: started \(pid \d+, log {local.dir}/{name}\.log\)$", up.stdout, re.M
        )
    assert f"curl -i {local.envoy_url}/api/hello" in up.stdout
    started = pids(local)
    assert sorted(started) == ["envoy", "mint", "paygress", "upstream"]

    again = local.run(str(LOCAL / "up"))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("already running") == 4
    assert pids(local) == started

    with httpx.Client(base_url=local.envoy_url, trust_env=False, timeout=10) as http:
        assert http.get("/public").status_code == 200
        r = http.get("/api/hello")
        assert r.status_code == 402
        payment = r.json()["payment"]
        assert (payment["amount"], payment["price"], payment["mints"]) == (
            3,
            2,
            [local.mint_url],
        )

    # The README's snippet, pointed at this Envoy and this directory.
    snippet = readme_snippet().replace("127.0.0.1:8000", f"127.0.0.1:{local.envoy_port}")
    snippet = snippet.replace("/tmp/paygress-local", str(local.dir))
    paid = local.run("bash", "-euo", "pipefail", "-c", snippet)
    assert paid.returncode == 0, paid.stdout + paid.stderr
    answer = paid.stdout[paid.stdout.find("HTTP/1.1 ") :]  # after the wallet's own output
    assert answer.startswith("HTTP/1.1 200 OK"), paid.stdout
    assert "x-paygress-remaining: 0" in answer
    echoed = answer.split("\n\n", 1)[1]  # the echo upstream's body
    assert '"x-paygress-paid": "2"' in echoed
    assert "x-cashu" not in echoed  # the token stays at the gateway

    assert local.paygress("health", "--config", "deploy/local/paygress.yaml").stdout == "SERVING\n"
    checked = local.paygress("check-config", "--config", "deploy/local/paygress.yaml")
    assert checked.returncode == 0 and checked.stderr == "", checked.stderr
    assert f"mints: {local.mint_url}\n" in checked.stdout

    wallet = ("wallet", "--config", "deploy/local/paygress.yaml")
    balance = local.paygress(*wallet, "balance")
    assert balance.stdout == f"{local.mint_url}  2 sat spendable  0 sat pending\n", balance.stderr
    too_much = local.paygress(*wallet, "withdraw", "100")
    assert too_much.returncode == 1
    assert too_much.stderr == (
        f"paygress: not enough ecash at {local.mint_url}: wanted 100 sat, 2 sat available\n"
    )
    elsewhere = local.paygress(*wallet, "withdraw", "1", "--mint", "https://mint.example.com")
    assert elsewhere.returncode == 2
    assert elsewhere.stderr == (
        f"paygress: https://mint.example.com is not an accepted mint (accepted: {local.mint_url})\n"
    )
    out = local.paygress(*wallet, "withdraw", "2")
    assert out.returncode == 0, out.stderr
    assert re.fullmatch(
        rf"withdrawal [0-9a-f]{{16}}: 2 sat from {re.escape(local.mint_url)}; 0 sat left there\n",
        out.stderr,
    )
    token = out.stdout.strip()
    assert token.startswith("cashuB")
    # The operator's earnings are real ecash: nutshell's wallet takes them.
    received = local.run(
        str(REPO / ".venv-mint" / "bin" / "cashu"),
        "--host",
        local.mint_url,
        "receive",
        token,
        CASHU_DIR=str(local.dir / "operator-wallet"),
    )
    assert received.returncode == 0, received.stdout + received.stderr
    # 2 sat less the mint's fee of 1 for swapping them into the receiving wallet.
    assert "Received 1 sat" in received.stdout

    down = local.run(str(LOCAL / "down"))
    assert down.returncode == 0, down.stderr
    for name in ("envoy", "paygress", "upstream", "mint"):
        assert f"{name}: stopped (pid {started[name]})" in down.stdout
    assert not any(alive(pid) for pid in started.values())
    for port in (local.mint_port, local.upstream_port, local.envoy_port, local.envoy_admin_port):
        assert not listening(port)
    assert not (local.dir / "paygress.sock").exists()
    assert pids(local) == {}
    assert local.run(str(LOCAL / "down")).stdout == (
        f"nothing running (no live pid files in {local.dir})\n"
    )


def test_up_refuses_a_taken_port_and_starts_nothing(local: Local) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", local.mint_port))
        taken.listen()
        up = local.run(str(LOCAL / "up"))
    assert up.returncode == 1
    assert up.stderr == (
        f"up: mint: port {local.mint_port} is in use by another program "
        "(see deploy/local/env.sh to move it)\n"
    )
    assert pids(local) == {}


def test_envoy_stops_when_envoy_yaml_changes_shape(tmp: Path, local: Local) -> None:
    """deploy/local/envoy edits the one socket line of envoy.yaml, or says why it cannot."""
    copy = tmp / "repo"
    shutil.copytree(LOCAL, copy / "deploy" / "local")
    (copy / "deploy" / "envoy").mkdir()
    text = (REPO / "deploy" / "envoy" / "envoy.yaml").read_text()
    changed = text.replace("path: /run/paygress/paygress.sock", "path: /run/pg/authz.sock")
    (copy / "deploy" / "envoy" / "envoy.yaml").write_text(changed)
    (copy / ".venv").symlink_to(REPO / ".venv")
    done = local.run(str(copy / "deploy" / "local" / "envoy"))
    assert done.returncode == 1
    assert done.stderr == (
        "envoy: expected one 'path: /run/paygress/paygress.sock' in deploy/envoy/envoy.yaml, "
        "found 0\n"
    )


def test_the_local_config_matches_the_scripts_defaults() -> None:
    """deploy/local/paygress.yaml and env.sh name the same directory and mint port, and
    envoy.yaml the ports env.sh starts Envoy and the upstream on."""
    import yaml

    config = yaml.safe_load((LOCAL / "paygress.yaml").read_text())
    env_sh = (LOCAL / "env.sh").read_text()
    directory = re.search(r"^DEFAULT_DIR=(.+)$", env_sh, re.M)
    port = re.search(r"^DEFAULT_MINT_PORT=(\d+)$", env_sh, re.M)
    assert directory and port
    assert config["listen"]["socket"] == f"{directory[1]}/paygress.sock"
    assert config["listen"]["admin_socket"] == f"{directory[1]}/admin.sock"
    assert config["state_dir"] == f"{directory[1]}/state"
    assert config["mints"] == [f"http://127.0.0.1:{port[1]}"]

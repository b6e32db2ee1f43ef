"""The `paygress` command line: paygress.cli.main([...]) in-process, plus `serve` as a
subprocess where it has to bind sockets.

The wallet commands talk gRPC to a server started in-process on the test's event loop, so the
(synchronous) CLI runs in a thread.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from paygress import server
from paygress.cashu.nut13 import Seed
from paygress.cli import _parser, main
from paygress.config import ENV_OVERRIDES, parse_config
from tests.peers.procs import base_env

MNEMONIC = Seed.generate_mnemonic()
MINT = "http://127.0.0.1:9"  # discard port: nothing is ever contacted here
REPO = Path(__file__).resolve().parents[2]


def config_dict(tmp: Path, **extra: Any) -> dict[str, Any]:
    return {
        "listen": {"socket": str(tmp / "pg.sock"), "admin_socket": str(tmp / "admin.sock")},
        "state_dir": str(tmp / "state"),
        "mints": [MINT],
        "routes": [
            {"name": "api", "match": {"path_prefix": "/api/"}, "price": 4},
            {
                "name": "live",
                "match": {"path_prefix": "/live/"},
                "price": 5,
                "mode": "per_second",
                "grants": 60,
            },
        ],
        **extra,
    }


def write_config(tmp: Path, data: Any, name: str = "paygress.yaml") -> str:
    path = tmp / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return str(path)


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """`serve` installs its JSON log handler on the root logger (bound to the captured
    stderr of one test): put the root logger back as it was."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No PAYGRESS_* variable of the environment running the tests leaks in."""
    for key in list(os.environ):
        if key.startswith("PAYGRESS_"):
            monkeypatch.delenv(key)


@pytest_asyncio.fixture
async def running(tmp: Path) -> AsyncIterator[server.Running]:
    live = await server.start(parse_config(config_dict(tmp)), MNEMONIC)
    try:
        yield live
    finally:
        await live.stop(drain_seconds=0)


async def cli(*argv: str) -> int:
    """main() off the event loop (the server under test runs on it)."""
    return await asyncio.to_thread(main, list(argv))


# -- mnemonic, help, version -------------------------------------------------------------------


def test_mnemonic_prints_12_valid_words(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["mnemonic"]) == 0
    out = capsys.readouterr().out
    words = out.split()
    assert len(words) == 12
    assert out == " ".join(words) + "\n"
    Seed.from_mnemonic(out)  # raises on a bad checksum
    assert main(["mnemonic"]) == 0
    assert capsys.readouterr().out != out  # fresh randomness every time


def test_no_command_prints_help_and_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().out


def test_wallet_without_action_prints_help_and_returns_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["wallet", "--socket", "/nonexistent"]) == 2
    assert "COMMAND" in capsys.readouterr().out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("paygress ")


def _actions(parser: argparse.ArgumentParser, prog: str = "paygress") -> Iterator[tuple[str, Any]]:
    """Every argument of every command, as (command, argparse action)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{prog} {name}")
        elif not isinstance(action, argparse._HelpAction | argparse._VersionAction):
            yield prog, action


def test_every_argument_has_a_help_text() -> None:
    found = list(_actions(_parser()))
    assert len(found) >= 10
    for command, action in found:
        assert action.help, f"{command} {action.dest} has no help text"


@pytest.mark.parametrize(
    ("argv", "unit"),
    [
        (["wallet", "withdraw", "--help"], "in the wallet's unit (the config's `unit`, sat"),
        (["health", "--help"], "in seconds"),
    ],
)
def test_amounts_and_times_name_their_unit(
    capsys: pytest.CaptureFixture[str], argv: list[str], unit: str
) -> None:
    with pytest.raises(SystemExit):
        main(argv)
    assert unit in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("command", ["serve", "check-config"])
def test_help_lists_every_environment_variable(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    listed = dict(
        line.split(maxsplit=1) for line in out.splitlines() if line.startswith("  PAYGRESS_")
    )
    assert list(listed) == [
        "PAYGRESS_CONFIG",
        "PAYGRESS_MNEMONIC",
        "PAYGRESS_MNEMONIC_FILE",
        *ENV_OVERRIDES,
    ]
    for var, path in ENV_OVERRIDES.items():
        assert listed[var].startswith(path), var
    assert listed["PAYGRESS_SOCKET"] == "listen.socket (default: /run/paygress/paygress.sock)"
    assert listed["PAYGRESS_SOCKET_MODE"] == "listen.socket_mode (default: 0660)"
    assert listed["PAYGRESS_TCP"] == "listen.tcp (default: off)"
    assert listed["PAYGRESS_MINTS"] == "mints, comma-separated (default: none)"
    assert listed["PAYGRESS_DRY_RUN"] == "dry_run (default: false)"
    assert listed["PAYGRESS_DRAIN_SECONDS"] == "drain_seconds (default: 5.0)"


def test_the_environment_list_follows_the_config_table(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The help is generated from config.ENV_OVERRIDES: a variable added there is listed."""
    monkeypatch.setitem(ENV_OVERRIDES, "PAYGRESS_MAX_PROOFS", "limits.max_proofs")
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    assert re.search(r"^  PAYGRESS_MAX_PROOFS +limits\.max_proofs \(default: 64\)$", out, re.M)


# -- check-config ------------------------------------------------------------------------------


def test_check_config_prints_summary(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp, config_dict(tmp))
    assert main(["check-config", "--config", path]) == 0
    captured = capsys.readouterr()
    out = captured.out
    assert f"config: {path}\n" in out
    assert "from the environment" not in out
    assert f"socket: {tmp / 'pg.sock'} (mode 0660): ext_authz, health, reflection" in out
    assert f"admin socket: {tmp / 'admin.sock'} (mode 0600): the wallet admin" in out
    assert "event loop: uvloop (event_loop: auto)" in out
    assert "tcp: off" in out
    assert "http: off" in out
    assert "metrics: off" in out
    assert f"state_dir: {tmp / 'state'}\n" in out
    assert f"store: sqlite {tmp / 'state' / 'paygress.db'} (one process)" in out
    assert "workers: 1 on this node" in out
    assert "dry run: off" in out
    assert f"mints: {MINT}" in out
    assert "payments: a check waits 2.5 s for a swap (then 503 payment_pending)" in out
    assert "DLEQ proofs optional" in out
    assert "60/min per mint (burst 10), 6/min per client (burst 3)" in out
    assert (
        "offline: locked tokens pass without a mint call (queue 10000 proofs, batches of 64 "
        "every 2 s)" in out
    )
    assert "limits: tokens up to 8192 bytes and 64 proofs" in out
    assert "route api: 1 request per 4 sat (per_request), matching path_prefix /api/" in out
    assert "route live: 60 seconds per 5 sat (per_second), matching path_prefix /live/" in out
    assert captured.err == ""  # nothing to warn about


def test_check_config_shows_every_listener_and_setting(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_dict(
        tmp,
        dry_run=True,
        offline={"accept_locked": False},
        metrics={"listen": "0.0.0.0:9464"},
        payments={
            "timeout_seconds": 1.5,
            "require_dleq": True,
            "unproven_swaps": {"per_mint_per_minute": 30, "per_client_burst": 2},
        },
    )
    config["listen"].update(tcp="127.0.0.1:9001", http="127.0.0.1:8181", http_trusted_hops=2)
    config["routes"][0]["match"].update(hosts=["api.example.com"], methods=["get", "post"])
    config["routes"].append({"name": "rx", "match": {"path_regex": "^/r/[0-9]+$"}, "price": 1})
    config["routes"].append({"name": "all", "price": 9})
    assert main(["check-config", "--config", write_config(tmp, config)]) == 0
    out = capsys.readouterr().out
    assert "tcp: 127.0.0.1:9001: ext_authz, health\n" in out
    assert "http: 127.0.0.1:8181: forward-auth for NGINX and Traefik (2 trusted proxy hop" in out
    assert "metrics: http://0.0.0.0:9464/metrics" in out
    assert "dry run: ON: every request is let through" in out
    assert "a check waits 1.5 s for a swap" in out and "DLEQ proofs required" in out
    assert "30/min per mint (burst 10), 6/min per client (burst 2)" in out
    assert "offline: off (tokens locked to the operator are swapped at once)" in out
    assert "matching hosts api.example.com; path_prefix /api/; methods GET, POST" in out
    assert "route rx: 1 request per 1 sat (per_request), matching path_regex ^/r/[0-9]+$" in out
    assert "route all: 1 request per 9 sat (per_request), matching every request" in out


def test_check_config_shows_pods_for_payment(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = config_dict(
        tmp,
        tiers=[
            {
                "id": "small",
                "cpu": "500m",
                "memory": "512Mi",
                "images": ["app:1"],
                "rate_msat_per_second": 1000,
            }
        ],
        kubernetes={"namespace": "workloads", "kubeconfig": "/etc/kube.yaml"},
    )
    config["routes"] = [{"name": "pods", "match": {"path_prefix": "/pod/"}, "tier": "small"}]
    assert main(["check-config", "--config", write_config(tmp, config)]) == 0
    out = capsys.readouterr().out
    assert (
        "route pods: a small pod (500m CPU, 512Mi) at 1000 msat per second, 60 to 86400 s; at "
        "least 60 sat (pod), matching path_prefix /pod/" in out
    )
    assert "kubernetes: pods in namespace workloads, kubeconfig /etc/kube.yaml" in out


def test_check_config_warns_when_nothing_is_sold(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp, {"state_dir": str(tmp / "state")})
    assert main(["check-config", "--config", path]) == 0  # valid: warnings only
    captured = capsys.readouterr()
    assert "routes: none (every request is free)" in captured.out
    assert "mints: none" in captured.out
    assert captured.err.splitlines() == [
        "warning: no route is priced: every request passes for free (add `routes:` with a "
        "price or a tier)",
        "warning: no mint is listed: no payment can be accepted (add `mints:`)",
    ]


@pytest.mark.parametrize(
    ("change", "warning"),
    [
        ({"dry_run": True}, "dry_run is on: Paygress lets every request through"),
        (
            {"payments": {"timeout_seconds": 3}},
            "payments.timeout_seconds is 3: keep it below the proxy's ext_authz timeout (3 s",
        ),
        (
            {"mints": ["http://mint.example.com"]},
            "mint http://mint.example.com is plain http: tokens sent to it can be read",
        ),
    ],
)
def test_check_config_warns_about_risky_settings(
    tmp: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], warning: str
) -> None:
    path = write_config(tmp, config_dict(tmp, **change))
    assert main(["check-config", "--config", path]) == 0
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"warning: {warning}")


def test_check_config_takes_loopback_and_https_mints_without_warning(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mints = ["https://mint.example.com", "http://localhost:3338", "http://[::1]:3338"]
    path = write_config(tmp, config_dict(tmp, mints=mints))
    assert main(["check-config", "--config", path]) == 0
    assert capsys.readouterr().err == ""


def test_check_config_shows_free_clients_without_their_keys(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digest = "ab" * 32
    free = {
        "clients": [
            {"name": "office", "cidrs": ["10.0.0.0/8"]},
            {"name": "partner", "api_key_sha256": digest, "routes": ["api"]},
        ]
    }
    path = write_config(tmp, config_dict(tmp, free_clients=free))
    assert main(["check-config", "--config", path]) == 0
    out = capsys.readouterr().out
    assert "free clients: 2 (api key header: x-paygress-key)" in out
    assert "free client office: 10.0.0.0/8; every priced route" in out
    assert f"free client partner: api key sha256 {digest[:12]}…; api" in out
    assert digest not in out


def test_check_config_reads_paygress_config_env(
    tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp, config_dict(tmp))
    monkeypatch.setenv("PAYGRESS_CONFIG", path)
    monkeypatch.setenv("PAYGRESS_TCP", "127.0.0.1:9001")
    monkeypatch.setenv("PAYGRESS_DRY_RUN", "0")
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert f"config: {path}\n" in out
    assert "from the environment: PAYGRESS_TCP (listen.tcp), PAYGRESS_DRY_RUN (dry_run)" in out
    assert "tcp: 127.0.0.1:9001" in out
    assert "route api:" in out


def test_check_config_without_any_file_shows_the_defaults(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "config: no file (the defaults and the environment)" in out
    assert "socket: /run/paygress/paygress.sock (mode 0660)" in out
    assert "state_dir: /var/lib/paygress" in out


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"listn": {}}, "listn"),
        ({"listen": {"socket": "/tmp/x.sock", "mode": "0600"}}, "listen.mode"),
        ({"listen": {"socket_mode": "rw-rw----"}}, "listen.socket_mode"),
        ({"listen": {"tcp": "localhost"}}, "listen.tcp"),
        ({"mints": ["ftp://mint"]}, "mints[0]"),
        ({"routes": [{"name": "api", "match": {"path_prefx": "/x"}, "price": 1}]}, "path_prefx"),
        ({"routes": [{"name": "api", "price": 0}]}, "routes[0] (api).price"),
        ({"routes": [{"name": "api", "price": 1, "mode": "monthly"}]}, "routes[0] (api).mode"),
        ({"limits": {"max_proofs": "many"}}, "limits.max_proofs"),
        ({"drain_seconds": -1}, "drain_seconds"),
    ],
)
def test_check_config_names_the_bad_key(
    tmp: Path, capsys: pytest.CaptureFixture[str], change: dict[str, Any], key: str
) -> None:
    path = write_config(tmp, {**config_dict(tmp), **change})
    assert main(["check-config", "--config", path]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("paygress: config error: ")
    assert key in captured.err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("routes: [unclosed\n", "not valid YAML"),
        ("- a list\n- not a mapping\n", "mapping at the top level"),
    ],
)
def test_check_config_rejects_unreadable_files(
    tmp: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = write_config(tmp, text)
    assert main(["check-config", "--config", path]) == 2
    assert message in capsys.readouterr().err


def test_check_config_missing_file(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "--config", str(tmp / "nope.yaml")]) == 2
    assert "cannot read config file" in capsys.readouterr().err


# -- serve: refusals before anything starts ----------------------------------------------------


@pytest.mark.parametrize("key", ["mnemonic", "seed"])
def test_serve_refuses_secrets_in_the_config_file(
    tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setenv("PAYGRESS_MNEMONIC", MNEMONIC)
    path = write_config(tmp, {**config_dict(tmp), key: MNEMONIC})
    assert main(["serve", "--config", path]) == 2
    err = capsys.readouterr().err
    assert f"{key}: secrets do not belong in the config file" in err
    assert "PAYGRESS_MNEMONIC" in err
    assert MNEMONIC not in err  # the secret itself is not echoed
    assert not (tmp / "pg.sock").exists()


def test_serve_without_mnemonic_returns_2(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp, config_dict(tmp))
    assert main(["serve", "--config", path]) == 2
    err = capsys.readouterr().err
    assert "no wallet mnemonic" in err
    assert "PAYGRESS_MNEMONIC" in err and "paygress mnemonic" in err
    assert not (tmp / "pg.sock").exists()
    assert not (tmp / "state").exists()


def test_serve_with_unreadable_mnemonic_file_returns_2(
    tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYGRESS_MNEMONIC_FILE", str(tmp / "missing-words"))
    assert main(["serve", "--config", write_config(tmp, config_dict(tmp))]) == 2
    assert "PAYGRESS_MNEMONIC_FILE" in capsys.readouterr().err


def test_serve_with_a_missing_kubeconfig_exits_1_with_a_message(
    tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from paygress.cashu.nut13 import Seed

    monkeypatch.setenv("PAYGRESS_MNEMONIC", Seed.generate_mnemonic())
    tier = {
        "id": "small",
        "cpu": "100m",
        "memory": "64Mi",
        "images": ["app:1"],
        "rate_msat_per_second": 1000,
    }
    config = config_dict(
        tmp,
        tiers=[tier],
        kubernetes={"kubeconfig": str(tmp / "no-such-kubeconfig")},
        drain_seconds=0,
    )
    config["routes"].append({"name": "pods", "match": {"path_prefix": "/pod/"}, "tier": "small"})
    assert main(["serve", "--config", write_config(tmp, config)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "paygress: cannot start: ValueError: kubernetes.kubeconfig" in err
    assert "no-such-kubeconfig: no such file" in err
    assert not (tmp / "pg.sock").exists(), "nothing is left behind"


async def test_serve_on_a_live_socket_exits_1_saying_in_use(
    running: server.Running, tmp: Path
) -> None:
    """`paygress serve` as a real process: a socket in use is a start failure (exit 1)."""
    path = write_config(
        tmp, {**config_dict(tmp), "state_dir": str(tmp / "other")}, name="second.yaml"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "paygress.cli",
        "serve",
        "--config",
        path,
        env=base_env(tmp, {"PAYGRESS_MNEMONIC": MNEMONIC}),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 1, err
    assert b"cannot start" in err and b"in use" in err
    # The first server still owns its socket.
    assert await cli("wallet", "--socket", str(running.admin_socket_path), "balance") == 0


# -- wallet ------------------------------------------------------------------------------------


def test_wallet_balance_without_server_returns_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wallet", "--socket", "/nonexistent", "balance"]) == 1
    err = capsys.readouterr().err
    assert "no server at /nonexistent" in err
    assert "is `paygress serve` running?" in err


def test_wallet_socket_defaults_to_paygress_admin_socket_env(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYGRESS_ADMIN_SOCKET", "/nonexistent/from-env.sock")
    assert main(["wallet", "balance"]) == 1
    assert "no server at /nonexistent/from-env.sock" in capsys.readouterr().err


def test_wallet_with_a_bad_config_says_so(capsys: pytest.CaptureFixture[str], tmp: Path) -> None:
    bad = tmp / "bad.yaml"
    bad.write_text("listen: {admin_socket: 7}\n")
    assert main(["wallet", "--config", str(bad), "balance"]) == 1
    assert "config error: listen.admin_socket" in capsys.readouterr().err


def test_wallet_withdraw_rejects_non_positive_amount(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["wallet", "--socket", "/nonexistent", "withdraw", "0"]) == 2
    assert "amount must be positive" in capsys.readouterr().err


async def test_wallet_balance_of_empty_wallet(
    running: server.Running, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("wallet", "--socket", str(running.admin_socket_path), "balance") == 0
    assert capsys.readouterr().out == "the wallet is empty\n"


async def test_wallet_finds_the_admin_socket_in_the_config(
    running: server.Running, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert running.admin_socket_path is not None
    path = running.admin_socket_path.parent / "server.yaml"
    path.write_text(yaml.safe_dump(config_dict(running.admin_socket_path.parent)))
    assert await cli("wallet", "--config", str(path), "balance") == 0
    assert "the wallet is empty" in capsys.readouterr().out
    monkeypatch.setenv("PAYGRESS_CONFIG", str(path))
    assert await cli("wallet", "balance") == 0
    assert "the wallet is empty" in capsys.readouterr().out


async def test_wallet_withdraw_from_empty_wallet_returns_1(
    running: server.Running, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("wallet", "--socket", str(running.admin_socket_path), "withdraw", "5") == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # no token printed
    assert captured.err.strip() == "paygress: the wallet is empty"


async def test_wallet_withdraw_from_empty_wallet_at_named_mint_returns_1(
    running: server.Running, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ("wallet", "--socket", str(running.admin_socket_path), "withdraw", "5", "--mint", MINT)
    assert await cli(*argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "not enough ecash" in captured.err


def test_pubkey_prints_the_lock_key_of_the_seed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from paygress.wallet.locks import lock_pubkey

    monkeypatch.setenv("PAYGRESS_MNEMONIC", MNEMONIC)
    assert main(["pubkey"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == lock_pubkey(Seed.from_mnemonic(MNEMONIC))
    assert len(printed) == 66 and printed[:2] in ("02", "03")
    monkeypatch.delenv("PAYGRESS_MNEMONIC")
    assert main(["pubkey"]) == 2
    assert "no wallet mnemonic" in capsys.readouterr().err


async def test_wallet_withdraw_refuses_a_mint_the_config_does_not_accept(
    running: server.Running, capsys: pytest.CaptureFixture[str], tmp: Path
) -> None:
    """With the server's config at hand, the CLI says so itself and lists the accepted mints;
    with the socket only, the server refuses it."""
    path = write_config(tmp, config_dict(tmp), name="server.yaml")
    other = "https://Other.example.com/"
    assert await cli("wallet", "--config", path, "withdraw", "5", "--mint", other) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        f"paygress: https://other.example.com is not an accepted mint (accepted: {MINT})\n"
    )
    socket = str(running.admin_socket_path)
    assert await cli("wallet", "--socket", socket, "withdraw", "5", "--mint", other) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "paygress: https://other.example.com is not an accepted mint\n"


def test_wallet_withdraw_refuses_a_malformed_mint(
    capsys: pytest.CaptureFixture[str], tmp: Path
) -> None:
    path = write_config(tmp, config_dict(tmp))
    assert main(["wallet", "--config", path, "withdraw", "5", "--mint", "ftp://x"]) == 2
    assert "paygress: --mint: not an http(s) URL" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "env", "origin"),
    [
        ([], {}, "the default: no --config or $PAYGRESS_CONFIG given"),
        ([], {"PAYGRESS_ADMIN_SOCKET": "{tmp}/env.sock"}, "$PAYGRESS_ADMIN_SOCKET"),
        (["--config", "{tmp}/set.yaml"], {}, "listen.admin_socket of {tmp}/set.yaml"),
        ([], {"PAYGRESS_CONFIG": "{tmp}/set.yaml"}, "listen.admin_socket of {tmp}/set.yaml"),
        (
            ["--config", "{tmp}/unset.yaml"],
            {},
            "the default: {tmp}/unset.yaml sets no listen.admin_socket",
        ),
        (["--config", "{tmp}/set.yaml", "--socket", "{tmp}/flag.sock"], {}, "--socket"),
    ],
)
def test_wallet_says_where_the_socket_it_tried_came_from(
    tmp: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    env: dict[str, str],
    origin: str,
) -> None:
    write_config(tmp, {"listen": {"admin_socket": f"{tmp}/file.sock"}}, name="set.yaml")
    write_config(tmp, {"state_dir": str(tmp)}, name="unset.yaml")
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(tmp=tmp))
    assert main(["wallet", *(a.format(tmp=tmp) for a in argv), "balance"]) == 1
    err = capsys.readouterr().err
    assert f"({origin.format(tmp=tmp)}; no such file)" in err
    assert ("Name the server's config with --config FILE" in err) == origin.startswith(
        "the default"
    )


async def test_wallet_on_the_proxy_socket_says_it_is_the_wrong_one(
    running: server.Running, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("wallet", "--socket", str(running.socket_path), "balance") == 1
    err = capsys.readouterr().err
    assert f"paygress: {running.socket_path} does not serve this" in err
    assert "The wallet admin is on listen.admin_socket." in err


# -- health ------------------------------------------------------------------------------------


async def test_health_of_a_running_server(
    running: server.Running, capsys: pytest.CaptureFixture[str], tmp: Path
) -> None:
    assert await cli("health", "--socket", str(running.socket_path)) == 0
    assert capsys.readouterr().out == "SERVING\n"
    path = write_config(tmp, config_dict(tmp), name="server.yaml")
    assert await cli("health", "--config", path) == 0
    assert capsys.readouterr().out == "SERVING\n"


async def test_health_of_a_draining_server_is_not_serving(
    tmp: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live = await server.start(parse_config(config_dict(tmp)), MNEMONIC)
    try:
        await live.health.enter_graceful_shutdown()
        assert await cli("health", "--socket", str(live.socket_path)) == 1
        assert capsys.readouterr().out == "NOT_SERVING\n"
    finally:
        await live.stop(drain_seconds=0)


def test_health_without_a_server(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["health", "--socket", str(tmp / "none.sock"), "--timeout", "0.5"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"no server at {tmp / 'none.sock'} (--socket; no such file)" in captured.err

"""The `paygress` command line: paygress.cli.main([...]) in-process, plus `serve` as a
subprocess where it has to bind sockets.

The wallet commands talk gRPC to a server started in-process on the test's event loop, so the
(synchronous) CLI runs in a thread.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml

from paygress import server
from paygress.cashu.nut13 import Seed
from paygress.cli import main
from paygress.config import parse_config
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


# -- check-config ------------------------------------------------------------------------------


def test_check_config_prints_summary(tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp, config_dict(tmp))
    assert main(["check-config", "--config", path]) == 0
    out = capsys.readouterr().out
    assert f"socket: {tmp / 'pg.sock'} (mode 0660)" in out
    assert "event loop: uvloop (event_loop: auto)" in out
    assert "tcp: off" in out
    assert f"mints: {MINT}" in out
    assert "route api: 1 request per 4 sat (per_request)" in out
    assert "route live: 60 seconds per 5 sat (per_second)" in out


def test_check_config_reads_paygress_config_env(
    tmp: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYGRESS_CONFIG", write_config(tmp, config_dict(tmp)))
    monkeypatch.setenv("PAYGRESS_TCP", "127.0.0.1:9001")
    assert main(["check-config"]) == 0
    out = capsys.readouterr().out
    assert "tcp: 127.0.0.1:9001" in out
    assert "route api:" in out


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

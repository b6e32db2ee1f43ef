from pathlib import Path

import pytest

from paygress.config import ConfigError, load_config, load_mnemonic, parse_config
from paygress.core.pricing import Mode

EXAMPLE = """
listen:
  socket: /tmp/p.sock
  socket_mode: 0660
  tcp: 127.0.0.1:9001
state_dir: /tmp/state
mints: ["https://Mint.example.com/"]
routes:
  - name: api
    match: {path_prefix: /api/, methods: [get]}
    price: 10
  - name: stream
    match: {hosts: [Video.example.com], path_regex: "^/live/"}
    mode: per_second
    price: 5
    grants: 60
"""


def test_loads_example_file(tmp_path: Path) -> None:
    path = tmp_path / "paygress.yaml"
    path.write_text(EXAMPLE)
    config = load_config(path, env={})
    assert config.listen.socket == "/tmp/p.sock"
    assert config.listen.socket_mode == 0o660
    assert config.listen.tcp == "127.0.0.1:9001"
    assert config.mints == ("https://mint.example.com",)
    api, stream = config.routes
    assert api.methods == ("GET", "HEAD") and api.price == 10 and api.mode is Mode.PER_REQUEST
    assert stream.hosts == ("video.example.com",) and stream.grants == 60
    assert config.database_path == Path("/tmp/state/paygress.db")


def test_env_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(EXAMPLE)
    env = {
        "PAYGRESS_SOCKET": "/run/x.sock",
        "PAYGRESS_STATE_DIR": "/data",
        "PAYGRESS_MINTS": "https://a.example, https://b.example/",
        "PAYGRESS_LOG_LEVEL": "debug",
        "PAYGRESS_SOCKET_MODE": "0600",
    }
    config = load_config(path, env=env)
    assert config.listen.socket == "/run/x.sock"
    assert config.listen.socket_mode == 0o600
    assert config.state_dir == "/data"
    assert config.mints == ("https://a.example", "https://b.example")
    assert config.log_level == "DEBUG"


def test_config_path_from_env(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(EXAMPLE)
    assert load_config(None, env={"PAYGRESS_CONFIG": str(path)}).routes[0].name == "api"


def test_empty_config_is_all_free() -> None:
    config = parse_config({})
    assert config.routes == () and config.listen.socket.endswith(".sock")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"mnemonic": "abandon"}, "secrets do not belong"),
        ({"listne": {}}, "listne: unknown key"),
        ({"routes": [{"name": "a", "price": 1}]}, "mints: priced routes need"),
        ({"mints": ["x"], "routes": []}, r"mints\[0\]: not an http"),
        ({"mints": ["https://m"], "routes": [{"name": "a"}]}, r"price: required"),
        ({"mints": ["https://m"], "routes": [{"name": "a", "price": 0}]}, r"price: must be"),
        ({"mints": ["https://m"], "routes": [{"name": "a", "price": 1, "mode": "hourly"}]}, "mode"),
        (
            {"mints": ["https://m"], "routes": [{"price": 1, "match": {"path_regex": "("}}]},
            "invalid regex",
        ),
        (
            {
                "mints": ["https://m"],
                "routes": [{"name": "a", "price": 1}, {"name": "a", "price": 2}],
            },
            "duplicate route name",
        ),
        ({"listen": {"tcp": "nope"}}, "listen.tcp: must be host:port"),
        ({"listen": {"socket_mode": "rw"}}, "socket_mode"),
        ({"limits": {"max_proofs": 0}}, "limits.max_proofs"),
    ],
)
def test_errors_name_the_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_bad_yaml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("routes: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path, env={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", env={})


def test_mnemonic_from_env_or_file(tmp_path: Path) -> None:
    assert load_mnemonic({"PAYGRESS_MNEMONIC": " a  b\nc "}) == "a b c"
    f = tmp_path / "m"
    f.write_text("x y z\n")
    assert load_mnemonic({"PAYGRESS_MNEMONIC_FILE": str(f)}) == "x y z"
    with pytest.raises(ConfigError, match="no wallet mnemonic"):
        load_mnemonic({})


def test_event_loop_defaults_to_auto_and_is_checked() -> None:
    assert parse_config({}, env={}).event_loop == "auto"
    assert parse_config({"event_loop": "asyncio"}, env={}).event_loop == "asyncio"
    assert parse_config({}, env={"PAYGRESS_EVENT_LOOP": "UVLOOP"}).event_loop == "uvloop"
    with pytest.raises(ConfigError, match="event_loop: must be one of auto, uvloop, asyncio"):
        parse_config({"event_loop": "trio"}, env={})


def test_defaults_are_the_dataclass_defaults() -> None:
    from paygress.config import Config

    assert parse_config({}, env={}) == Config()


@pytest.mark.parametrize("text", ["ture", "2", "", "maybe"])
def test_booleans_from_env_are_strict_and_errors_name_the_variable(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^PAYGRESS_DRY_RUN \(dry_run\): must be true or false"):
        parse_config({}, env={"PAYGRESS_DRY_RUN": text})


@pytest.mark.parametrize(("text", "value"), [("true", True), ("OFF", False), ("1", True)])
def test_booleans_from_env(text: str, value: bool) -> None:
    assert parse_config({}, env={"PAYGRESS_DRY_RUN": text}).dry_run is value


def test_every_override_is_checked_like_its_key() -> None:
    from paygress.config import ENV_OVERRIDES

    assert len(ENV_OVERRIDES) == len(set(ENV_OVERRIDES.values()))
    with pytest.raises(ConfigError, match=r"^PAYGRESS_DRAIN_SECONDS \(drain_seconds\)"):
        parse_config({}, env={"PAYGRESS_DRAIN_SECONDS": "soon"})
    with pytest.raises(ConfigError, match=r"^PAYGRESS_NAMESPACE \(kubernetes.namespace\)"):
        parse_config({}, env={"PAYGRESS_NAMESPACE": "Not_A_Label"})
    with pytest.raises(ConfigError, match=r"^PAYGRESS_MINTS \(mints\)\[0\]"):
        parse_config({}, env={"PAYGRESS_MINTS": "ftp://x"})
    with pytest.raises(ConfigError, match="log_level: must be one of"):
        parse_config({"log_level": "chatty"}, env={})
    config = parse_config({}, env={"PAYGRESS_METRICS": "127.0.0.1:9464", "PAYGRESS_TCP": ""})
    assert config.metrics_listen == "127.0.0.1:9464" and config.listen.tcp is None

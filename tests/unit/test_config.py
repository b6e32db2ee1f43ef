import hashlib
from pathlib import Path

import pytest
import yaml

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


# -- route matching and free clients -----------------------------------------------------------

MINTS = {"mints": ["https://m"]}
PARTNER_KEY = "s3cret-partner-key-0123456789abcdef"
PARTNER_SHA = hashlib.sha256(PARTNER_KEY.encode()).hexdigest()


def route(**match: object) -> dict[str, object]:
    return {**MINTS, "routes": [{"name": "a", "price": 1, "match": match}]}


def test_match_keys_hosts_case_and_methods() -> None:
    config = parse_config(
        route(hosts=["PAID.Example.com.", "[::1]"], path_prefix="/Shop/", case_insensitive=True)
    )
    (rule,) = config.routes
    assert rule.hosts == ("paid.example.com", "[::1]")
    assert rule.case_insensitive and rule.path_prefix == "/shop/"
    assert parse_config(route(path_prefix="/x/")).routes[0].case_insensitive is False


@pytest.mark.parametrize(
    ("match", "message"),
    [
        ({"hosts": ["a:80:80"]}, r"routes\[0\] \(a\)\.match\.hosts\[0\]: 'a:80:80' is not a host"),
        ({"hosts": [""]}, r"match\.hosts: must be a list of strings"),
        ({"hosts": [" "]}, r"match\.hosts\[0\]"),
        ({"path_prefix": "/api;v=1/"}, r"match\.path_prefix: must not contain ';'"),
        ({"case_insensitive": "maybe"}, r"match\.case_insensitive: must be true or false"),
        ({"hostz": ["a"]}, r"match\.hostz: unknown key"),
    ],
)
def test_match_errors_name_the_key(match: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(route(**match))


def test_free_clients_are_parsed_and_reach_the_pricing() -> None:
    config = parse_config(
        {
            **MINTS,
            "routes": [{"name": "api", "price": 1, "match": {"path_prefix": "/api/"}}],
            "free_clients": {
                "api_key_header": "X-Api-Key",
                "clients": [
                    {"name": "office", "cidrs": ["10.0.0.0/8", "2001:db8::/32"]},
                    {"name": "partner", "api_key_sha256": PARTNER_SHA.upper(), "routes": ["api"]},
                ],
            },
        }
    )
    office, partner = config.free_clients.clients
    assert [str(n) for n in office.networks] == ["10.0.0.0/8", "2001:db8::/32"]
    assert partner.key_sha256 == bytes.fromhex(PARTNER_SHA) and partner.routes == {"api"}
    pricing = config.pricing()
    assert pricing.free_clients is not None
    assert pricing.free_clients.key_header == "x-api-key"
    assert pricing.free_clients.find("", {"x-api-key": PARTNER_KEY}, "api") is partner
    assert parse_config({}).pricing().free_clients is None


def test_the_key_header_can_come_from_the_environment() -> None:
    env = {"PAYGRESS_API_KEY_HEADER": "X-Client-Key"}
    assert parse_config({}, env=env).free_clients.api_key_header == "x-client-key"
    with pytest.raises(ConfigError, match=r"^PAYGRESS_API_KEY_HEADER \(free_clients"):
        parse_config({}, env={"PAYGRESS_API_KEY_HEADER": "X-Cashu"})


@pytest.mark.parametrize(
    ("free", "message"),
    [
        ({"clients": [{"name": "x"}]}, r"clients\[0\] \(x\): give cidrs, api_key_sha256, or both"),
        ({"clients": [{"name": "x", "cidrs": ["10.0.0.1/8"]}]}, r"cidrs\[0\]: not an address"),
        ({"clients": [{"name": "x", "cidrs": ["office"]}]}, r"cidrs\[0\]: not an address"),
        ({"clients": [{"name": "x", "api_key_sha256": PARTNER_KEY}]}, "64 hex digits"),
        ({"clients": [{"name": "a b", "cidrs": ["10.0.0.0/8"]}]}, r"\.name: letters, digits"),
        ({"clients": [{"name": "x", "cidrs": ["10.0.0.0/8"], "route": ["a"]}]}, "route: unknown"),
        (
            {"clients": [{"name": "x", "cidrs": ["10.0.0.0/8"], "routes": ["nope"]}]},
            r"clients\[0\] \(x\)\.routes: no route 'nope'",
        ),
        (
            {"clients": [{"name": "x", "cidrs": ["10.0.0.0/8"]}] * 2},
            "free_clients.clients: duplicate name 'x'",
        ),
        ({"clients": {"name": "x"}}, "free_clients.clients: must be a list"),
        ({"api_key_header": "Authorization"}, "a header Paygress or the proxy reads"),
        ({"api_key_header": "x paygress"}, "must be a header name"),
        ({"clientz": []}, "free_clients.clientz: unknown key"),
    ],
)
def test_free_client_errors_name_the_key(free: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({**MINTS, "free_clients": free})


def test_a_tier_route_is_never_free() -> None:
    tier = {
        "id": "small",
        "cpu": "1",
        "memory": "1Gi",
        "images": ["app:1"],
        "rate_msat_per_second": 1000,
    }
    raw = {
        **MINTS,
        "tiers": [tier],
        "routes": [{"name": "pods", "tier": "small"}],
        "free_clients": {"clients": [{"name": "x", "cidrs": ["10.0.0.0/8"], "routes": ["pods"]}]},
    }
    with pytest.raises(ConfigError, match="'pods' sells pods, which are never free"):
        parse_config(raw)


def test_the_readme_example_is_a_valid_config() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Configuration\n", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = parse_config(yaml.safe_load(example), env={})
    assert [r.name for r in config.routes] == ["api", "live"]
    assert config.routes[0].methods == ("GET", "POST", "HEAD")
    assert [c.name for c in config.free_clients.clients] == ["office", "partner"]

"""Envoy (``.venv/bin/envoy``) running the operators' example config ``deploy/envoy/envoy.yaml``.

The config is loaded with PyYAML and rewritten structurally, never by text substitution, so
the tests exercise the file operators deploy:

* listener -> ``127.0.0.1:<free port>``, admin -> ``127.0.0.1:<free port>``;
* cluster ``upstream`` -> the given ``(host, port)``;
* cluster ``paygress`` -> the given Unix socket path, or a TCP ``(host, port)``;
* cluster ``paygress_http`` (deploy/envoy/envoy-http-authz.yaml) -> ``paygress_http``;
* ``authz=False`` removes the ext_authz filter (and its per-route config and the ``paygress``
  cluster): the benchmark's "no auth" baseline;
* ``jwks`` -> the inline JWKS of every ``jwt_authn`` provider (deploy/envoy/envoy-sessions.yaml);
* ``mutate(config)`` for anything else a test needs to change.

Several Envoys run side by side: each gets ``--base-id <random>`` and ``--disable-hot-restart``
(no shared-memory region to collide on).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from .procs import (
    LOOPBACK,
    REPO_ROOT,
    VENV,
    ManagedProcess,
    free_port,
    wait_for_http,
    wait_for_port,
)

ENVOY_BIN = VENV / "bin" / "envoy"
DEFAULT_CONFIG = REPO_ROOT / "deploy" / "envoy" / "envoy.yaml"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
JWT_FILTER = "envoy.filters.http.jwt_authn"
HCM_FILTER = "envoy.filters.network.http_connection_manager"

Config = dict[str, Any]


def load_config(path: str | Path = DEFAULT_CONFIG) -> Config:
    with Path(path).open(encoding="utf-8") as fh:
        config = yaml.safe_load(fh)
    if not isinstance(config, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    return config


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def find_cluster(config: Config, name: str) -> dict[str, Any]:
    for cluster in config["static_resources"]["clusters"]:
        if cluster["name"] == name:
            assert isinstance(cluster, dict)
            return cluster
    raise KeyError(f"no cluster named {name!r}")


def set_cluster_address(config: Config, name: str, address: dict[str, Any]) -> None:
    """Point every endpoint of cluster ``name`` at ``address`` (an Envoy Address mapping)."""
    cluster = find_cluster(config, name)
    for locality in cluster["load_assignment"]["endpoints"]:
        for lb_endpoint in locality["lb_endpoints"]:
            lb_endpoint["endpoint"]["address"] = copy.deepcopy(address)


def http_connection_managers(config: Config) -> list[dict[str, Any]]:
    """The typed_config of every HTTP connection manager of every listener."""
    found: list[dict[str, Any]] = []
    for listener in config["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                if network_filter["name"] == HCM_FILTER:
                    found.append(network_filter["typed_config"])
    return found


def ext_authz_config(config: Config) -> dict[str, Any]:
    """The ext_authz filter's typed_config (to tweak timeout, failure_mode_allow, ...)."""
    for hcm in http_connection_managers(config):
        for http_filter in hcm["http_filters"]:
            if http_filter["name"] == EXT_AUTHZ_FILTER:
                typed: dict[str, Any] = http_filter["typed_config"]
                return typed
    raise KeyError("no ext_authz filter")


def set_jwks(config: Config, jwks: str) -> None:
    """Every jwt_authn provider verifies with `jwks` (a JWK Set, as `paygress jwks` prints it)."""
    found = 0
    for hcm in http_connection_managers(config):
        for http_filter in hcm["http_filters"]:
            if http_filter["name"] == JWT_FILTER:
                for provider in http_filter["typed_config"]["providers"].values():
                    provider["local_jwks"] = {"inline_string": jwks}
                    found += 1
    if not found:
        raise KeyError("no jwt_authn provider to give a JWKS")


def remove_ext_authz(config: Config) -> None:
    for hcm in http_connection_managers(config):
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != EXT_AUTHZ_FILTER]
        for vhost in hcm.get("route_config", {}).get("virtual_hosts", []):
            for route in [vhost, *vhost.get("routes", [])]:
                per_filter = route.get("typed_per_filter_config")
                if per_filter is not None:
                    per_filter.pop(EXT_AUTHZ_FILTER, None)
                    if not per_filter:
                        del route["typed_per_filter_config"]
    clusters = config["static_resources"]["clusters"]
    config["static_resources"]["clusters"] = [
        c for c in clusters if c["name"] not in ("paygress", "paygress_http")
    ]


class EnvoyProxy(ManagedProcess):
    """``await EnvoyProxy(workdir, upstream=(host, port), paygress_socket=path).start()``.

    ``url`` is the listener (``http://127.0.0.1:<port>``), ``admin_url`` the admin interface.
    Exactly one of ``paygress_socket`` / ``paygress_tcp`` unless ``authz=False``; with neither,
    the config's own socket path is kept.
    """

    name = "envoy"
    startup_timeout = 20.0

    def __init__(
        self,
        workdir: str | Path | None = None,
        *,
        upstream: tuple[str, int],
        paygress_socket: str | Path | None = None,
        paygress_tcp: tuple[str, int] | None = None,
        paygress_http: tuple[str, int] | None = None,
        authz: bool = True,
        concurrency: int = 1,
        port: int | None = None,
        admin_port: int | None = None,
        log_level: str = "warning",
        access_log: bool = False,
        config_path: str | Path = DEFAULT_CONFIG,
        mutate: Callable[[Config], None] | None = None,
        name: str | None = None,
        jwks: str | None = None,
    ) -> None:
        super().__init__(workdir, name=name)
        if paygress_socket is not None and paygress_tcp is not None:
            raise ValueError("give paygress_socket or paygress_tcp, not both")
        self.upstream = upstream
        self.paygress_socket = Path(paygress_socket) if paygress_socket is not None else None
        self.paygress_tcp = paygress_tcp
        self.paygress_http = paygress_http
        self.authz = authz
        self.concurrency = concurrency
        self.port = port if port is not None else free_port()
        self.admin_port = admin_port if admin_port is not None else free_port()
        self.log_level = log_level
        self.access_log = access_log
        self.config_path = Path(config_path)
        self.mutate = mutate
        self.jwks = jwks
        self.base_id = random.randint(1_000, 2_000_000_000)
        self.rendered_path = self.workdir / f"{self.name}.yaml"
        self.access_log_path = self.workdir / f"{self.name}-access.log"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://{LOOPBACK}:{self.admin_port}"

    def render_config(self) -> Config:
        """The rewritten config (also written to ``rendered_path`` on every start)."""
        config = load_config(self.config_path)
        config["admin"]["address"] = _socket_address(LOOPBACK, self.admin_port)
        listeners = config["static_resources"]["listeners"]
        if len(listeners) != 1:
            raise ValueError(f"expected one listener in {self.config_path}")
        listeners[0]["address"] = _socket_address(LOOPBACK, self.port)
        set_cluster_address(config, "upstream", _socket_address(*self.upstream))
        if not self.authz:
            remove_ext_authz(config)
        elif self.paygress_socket is not None:
            set_cluster_address(config, "paygress", {"pipe": {"path": str(self.paygress_socket)}})
        elif self.paygress_tcp is not None:
            set_cluster_address(config, "paygress", _socket_address(*self.paygress_tcp))
        elif self.paygress_http is not None:
            set_cluster_address(config, "paygress_http", _socket_address(*self.paygress_http))
            http_service = ext_authz_config(config)["http_service"]
            http_service["server_uri"]["uri"] = "http://{}:{}".format(*self.paygress_http)
        if self.jwks is not None:
            set_jwks(config, self.jwks)
        if self.access_log:
            for hcm in http_connection_managers(config):
                hcm["access_log"] = [
                    {
                        "name": "envoy.access_loggers.file",
                        "typed_config": {
                            "@type": "type.googleapis.com/"
                            "envoy.extensions.access_loggers.file.v3.FileAccessLog",
                            "path": str(self.access_log_path),
                        },
                    }
                ]
        if self.mutate is not None:
            self.mutate(config)
        return config

    def prepare(self) -> None:
        with self.rendered_path.open("w", encoding="utf-8") as fh:
            yaml.safe_dump(self.render_config(), fh, sort_keys=False)

    def command(self) -> list[str]:
        return [
            str(ENVOY_BIN),
            "-c",
            str(self.rendered_path),
            "--base-id",
            str(self.base_id),
            "--disable-hot-restart",
            "--concurrency",
            str(self.concurrency),
            "-l",
            self.log_level,
        ]

    async def wait_ready(self) -> None:
        await wait_for_http(
            f"{self.admin_url}/ready",
            timeout=self.startup_timeout,
            accept=lambda r: r.text.strip() == "LIVE",
            proc=self,
        )
        await wait_for_port(LOOPBACK, self.port, timeout=5.0, proc=self)

    async def stats(self, pattern: str | None = None) -> dict[str, int]:
        """Counters and gauges from the admin ``/stats`` (histograms skipped); ``pattern`` is
        Envoy's ``filter`` regex, e.g. ``"ext_authz"``."""
        params = {"filter": pattern} if pattern else {}
        async with httpx.AsyncClient(trust_env=False, timeout=5.0) as client:
            response = await client.get(f"{self.admin_url}/stats", params=params)
            response.raise_for_status()
        stats: dict[str, int] = {}
        for line in response.text.splitlines():
            name, sep, value = line.partition(": ")
            if sep and value.strip().lstrip("-").isdigit():
                stats[name] = int(value)
        return stats

"""The chart, run for real: its rendered config.yaml starts a real Paygress process, its
`helm test` script passes against it, and every query of the Grafana dashboard and every
PrometheusRule expression names metrics that this Paygress exports on /metrics.

Paygress runs with the standalone example's config (priced routes and a pod tier) as the chart
renders it; only what needs a cluster is swapped for loopback: the listeners get free ports,
the state a temp dir, the drain time 0, and the Kubernetes API is the strict fake of
tests/peers (so the pod metrics are registered as in a cluster). No mint is contacted: nothing
is paid here.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import pytest_asyncio
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.deploy.chart_render import Helm, documents, find_helm
from tests.deploy.paths import CHART, REPO
from tests.peers.kubeapi import FakeKubeApi
from tests.peers.paygress import PaygressProcess
from tests.peers.procs import LOOPBACK, free_port

DASHBOARD = REPO / "deploy" / "grafana" / "paygress.json"
CHART_DASHBOARD = CHART / "dashboards" / "paygress.json"
MNEMONIC = "legal winner thank year wave sausage worth useful legal winner thank yellow"
# Grafana's interval variables, which PromQL cannot parse: any duration stands in.
GRAFANA_INTERVALS = ("$__rate_interval", "$__interval", "$__range")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    helm: Helm | None = find_helm()
    if helm is None:
        pytest.skip("no helm binary on PATH and no helm-python-sdk installed")
    values = yaml.safe_load((CHART / "examples" / "values-standalone.yaml").read_text("utf-8"))
    values.update(prometheusRule={"enabled": True}, grafanaDashboard={"enabled": True})
    path = tmp_path_factory.mktemp("values") / "monitoring.yaml"
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return documents(helm.template(CHART, path))


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


@dataclass
class Running:
    paygress: PaygressProcess
    grpc: str
    metrics_url: str
    workdir: Path


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def running(rendered: list[dict[str, Any]]) -> AsyncIterator[Running]:
    config = yaml.safe_load(one(rendered, "ConfigMap", "paygress")["data"]["config.yaml"])
    assert config["listen"]["tcp"] == "0.0.0.0:9001"
    assert config["metrics"]["listen"] == "0.0.0.0:9464"
    workdir = Path(tempfile.mkdtemp(prefix="pg-chart-"))
    grpc, metrics = f"{LOOPBACK}:{free_port()}", f"{LOOPBACK}:{free_port()}"
    config["listen"].update(
        socket=str(workdir / "paygress.sock"), tcp=grpc, http=f"{LOOPBACK}:{free_port()}"
    )
    config["metrics"]["listen"] = metrics
    config["state_dir"] = str(workdir / "state")
    config["drain_seconds"] = 0  # no proxy to tell: stop at once
    namespace = config["kubernetes"]["namespace"]
    kube = await FakeKubeApi(namespaces=["default", namespace]).start()
    try:
        kubeconfig = kube.write_kubeconfig(workdir / "kubeconfig", namespace=namespace)
        config["kubernetes"]["kubeconfig"] = str(kubeconfig)
        paygress = await PaygressProcess(config, MNEMONIC, workdir / "paygress").start()
        try:
            yield Running(paygress, grpc, f"http://{metrics}/metrics", workdir)
        finally:
            await paygress.stop()
    finally:
        await kube.stop()


# ------------------------------------------------------------------------------ helm test


def helm_test_command(
    rendered: list[dict[str, Any]], workdir: Path, grpc: str, **env_override: str
) -> tuple[list[str], dict[str, str]]:
    """The test pod's command and environment, pointed at the local Paygress."""
    pod = one(rendered, "Pod", "paygress-test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["python", "/etc/paygress-test/helm_test.py"]
    script = workdir / "helm_test.py"
    configmap = one(rendered, "ConfigMap", "paygress-test")
    script.write_text(configmap["data"]["helm_test.py"], encoding="utf-8")
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PAYGRESS_TEST_GRPC"] == "paygress.paygress.svc:9001"
    env["PAYGRESS_TEST_GRPC"] = grpc
    env.update(env_override)
    return [sys.executable, str(script)], {"PATH": "/usr/bin:/bin", **env}


async def run(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode()


def test_the_test_pod_is_selected_by_nothing_the_chart_deploys(
    rendered: list[dict[str, Any]],
) -> None:
    """A ReplicaSet adopts orphan pods its selector matches, and Services route to them."""
    pod = one(rendered, "Pod", "paygress-test")
    labels = pod["metadata"]["labels"]
    selectors = [d["spec"]["selector"] for d in rendered if d["kind"] == "Service"]
    selectors += [
        d["spec"]["selector"]["matchLabels"] for d in rendered if d["kind"] == "Deployment"
    ]
    assert selectors
    assert not [s for s in selectors if s.items() <= labels.items()]
    (policy,) = [d for d in rendered if d["kind"] == "NetworkPolicy"]
    peers = [p for rule in policy["spec"]["ingress"] for p in rule.get("from", [])]
    admitted = [p["podSelector"]["matchLabels"] for p in peers if "podSelector" in p]
    assert any(a.items() <= labels.items() for a in admitted), "the policy must admit the test"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["spec"]["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.asyncio(loop_scope="session")
async def test_helm_test_passes_against_the_rendered_config(
    rendered: list[dict[str, Any]], running: Running
) -> None:
    command, env = helm_test_command(rendered, running.workdir, running.grpc)
    assert json.loads(env["PAYGRESS_TEST_REQUEST"]) == {
        "method": "GET",
        "host": "paygress-helm-test.invalid",
        "path": "/api/helm-test",
    }
    code, out = await run(command, env)
    assert code == 0, out
    assert f"ok    grpc.health.v1 at {running.grpc}: SERVING" in out
    assert "ok    ext_authz Check GET paygress-helm-test.invalid/api/helm-test: 402" in out


@pytest.mark.asyncio(loop_scope="session")
async def test_helm_test_fails_when_the_path_is_not_priced(
    rendered: list[dict[str, Any]], running: Running
) -> None:
    free = json.dumps({"method": "GET", "host": "x", "path": "/not-priced"})
    command, env = helm_test_command(
        rendered, running.workdir, running.grpc, PAYGRESS_TEST_REQUEST=free
    )
    code, out = await run(command, env)
    assert code == 1, out
    assert "FAIL  ext_authz Check GET x/not-priced: allowed" in out
    command, env = helm_test_command(
        rendered, running.workdir, f"{LOOPBACK}:{free_port()}", PAYGRESS_TEST_REQUEST=""
    )
    code, out = await run(command, env)
    assert code == 1 and "FAIL  " in out, out


# ------------------------------------------------------------------------------ metric names


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def exported(running: Running) -> set[str]:
    """Every series name this Paygress exports, also for families with no sample yet."""
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(running.metrics_url)
    assert response.status_code == 200
    names: set[str] = set()
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
        "info": ("_info",),
    }
    for family in text_string_to_metric_families(response.text):
        names |= {sample.name for sample in family.samples}
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (it must parse as PromQL)."""
    for variable in GRAFANA_INTERVALS:
        expr = expr.replace(variable, "5m")
    found: set[str] = set()

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"a selector without a metric name in {expr}"
            found.add(node.name)
        return True

    promql_parser.walk(promql_parser.parse(expr), visit)
    return found


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            # label_values(<selector>, <label>): the selector is PromQL.
            assert query.startswith("label_values(") and query.endswith(")")
            selector = query.removeprefix("label_values(").rsplit(",", 1)[0]
            yield f"variable {variable['name']}", selector


def test_metric_name_extraction_parses_promql() -> None:
    expr = 'sum by (le) (rate(a_bucket{job=~"$job"}[$__rate_interval])) / on() group_left b_total'
    assert metric_names(expr) == {"a_bucket", "b_total"}
    with pytest.raises(ValueError):
        metric_names("sum(rate(a_total[5m])")


@pytest.mark.asyncio(loop_scope="session")
async def test_dashboard_queries_name_exported_metrics(exported: set[str]) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    used: set[str] = set()
    unknown = []
    for where, expr in dashboard_queries(dashboard):
        names = metric_names(expr)
        used |= names
        unknown += [f"{where}: {name}" for name in sorted(names - exported)]
    assert unknown == []
    # What issue 9 asks the dashboard to show.
    assert {
        "paygress_checks_total",  # decisions by reason
        "paygress_check_duration_seconds_bucket",  # check latency
        "paygress_paid_amount_total",  # sats received
        "paygress_mint_request_duration_seconds_bucket",  # mint latency
        "paygress_mint_requests_total",  # mint errors
        "paygress_redeem_cache_total",  # redeem-cache hit rate
        "paygress_pods_active",
        "paygress_pod_events_total",  # pods
    } <= used


@pytest.mark.asyncio(loop_scope="session")
async def test_alert_expressions_name_exported_metrics(
    rendered: list[dict[str, Any]], exported: set[str]
) -> None:
    rule = one(rendered, "PrometheusRule", "paygress")
    rules = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert {r["alert"] for r in rules} == {
        "PaygressMintUnavailable",
        "PaygressMintRequestErrors",
        "PaygressErrorRate",
        "PaygressSwapsUnsettled",
        "PaygressLockedProofsLost",
        "PaygressKubernetesApiErrors",
    }
    unknown = [
        f"{r['alert']}: {name}"
        for r in rules
        for name in sorted(metric_names(r["expr"]) - exported)
    ]
    assert unknown == []


def test_the_chart_ships_the_dashboard_of_deploy_grafana(rendered: list[dict[str, Any]]) -> None:
    assert CHART_DASHBOARD.read_bytes() == DASHBOARD.read_bytes(), (
        "deploy/grafana/paygress.json and the chart's dashboards/paygress.json differ: copy it"
    )
    configmap = one(rendered, "ConfigMap", "paygress-dashboard")
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads(configmap["data"]["paygress.json"])
    assert shipped == json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert shipped["uid"] == "paygress"
    ids = [p["id"] for p in shipped["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"

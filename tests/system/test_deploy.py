"""deploy/ matches the app: manifests parse, probes hit real routes on the real port, the dashboard
queries only metrics the hub exports (and are valid PromQL), the shipped config loads."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from typing import Any

import pytest
import yaml

from hub.app import create_app
from hub.config import Config, build_config, env_overrides
from tests.support import need_program
from tests.support.hubproc import ROOT, HubProcess

pytestmark = pytest.mark.untimed  # no timing asserted: left out of CI's hog pass

DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "hub-dashboard.json"
PORT = Config().server.port
#: the seed's kubernetes-pods scrape job reads exactly these pod annotations
ANNOTATIONS = {"prometheus.io/scrape": "true", "prometheus.io/path": "/metrics", "prometheus.io/port": str(PORT)}
#: namespaces the seed's kubernetes-pods job discovers
SEED_NAMESPACES = {"healthcare-production", "healthcare-staging"}


def docs() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml":  # kustomize's input, not a Kubernetes object
            out += [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    return out


def find(kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def hub_container() -> dict[str, Any]:
    spec = find("Deployment", "hub")["spec"]["template"]["spec"]
    (container,) = [c for c in spec["containers"] if c["name"] == "hub"]
    return container


def resolve_port(container: dict[str, Any], port: int | str) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    (match,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return match


def app_routes(make_config: Any) -> set[str]:
    app = create_app(make_config())
    return {r.resource.canonical for r in app.router.routes() if r.method == "GET" and r.resource is not None}


# ----------------------------------------------------------------------------- manifests


def test_manifests_parse_and_are_well_formed():
    all_docs = docs()
    kinds = sorted((d["kind"], d["metadata"]["name"]) for d in all_docs)
    assert ("Deployment", "hub") in kinds and ("Service", "hub") in kinds
    assert ("ConfigMap", "hub-config") in kinds and ("Secret", "hub-secrets") in kinds
    for d in all_docs:
        assert d.get("apiVersion") and d.get("kind"), d
        # The seed's Prometheus only discovers pods in its two namespaces.
        assert d["metadata"].get("namespace") in SEED_NAMESPACES, d["metadata"]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert kustomization["namespace"] in SEED_NAMESPACES
    for d in all_docs:
        if d["kind"] == "Deployment":
            selector = d["spec"]["selector"]["matchLabels"]
            labels = d["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), d["metadata"]["name"]


def test_deployment_probes_match_app_routes_and_default_port(make_config):
    deployment = find("Deployment", "hub")
    assert deployment["spec"]["replicas"] == 3
    c = hub_container()
    routes = app_routes(make_config)
    assert {"/ready", "/health", "/metrics", "/ws"} <= routes
    ready, live = c["readinessProbe"]["httpGet"], c["livenessProbe"]["httpGet"]
    assert ready["path"] == "/ready" and live["path"] == "/health"
    assert resolve_port(c, ready["port"]) == resolve_port(c, live["port"]) == PORT
    assert [p["containerPort"] for p in c["ports"]] == [PORT]
    assert c["args"][:2] == ["hub", "serve"] and "--host" in c["args"]
    assert c["args"][c["args"].index("--host") + 1] == "0.0.0.0"
    assert c["args"][c["args"].index("--config") + 1] == "/etc/hub/config.toml"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]


def test_scrape_annotations_match_seed_relabel_config_and_metrics_route(make_config):
    annotations = find("Deployment", "hub")["spec"]["template"]["metadata"]["annotations"]
    assert {k: annotations.get(k) for k in ANNOTATIONS} == ANNOTATIONS
    assert all(isinstance(v, str) for v in annotations.values())  # YAML "true", not true
    assert annotations["prometheus.io/path"] in app_routes(make_config)
    # The seed's relabel regex for __address__ takes the port annotation as \d+.
    assert re.fullmatch(r"\d+", annotations["prometheus.io/port"])


def test_pod_runs_as_non_root_with_read_only_root():
    spec = find("Deployment", "hub")["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    sc = hub_container()["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]


def test_secrets_come_from_the_secret_and_name_real_config_keys():
    c = hub_container()
    secret = find("Secret", "hub-secrets")
    keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
    env = {e["name"]: e for e in c["env"]}
    assert {"HUB_SOURCES__BUSINESS__MONGODB_URI", "HUB_SOURCES__PROMETHEUS__BEARER_TOKEN",
            "HUB_CLUSTER__REDIS_URL"} <= set(env)
    for name, e in env.items():
        ref = e["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "hub-secrets" and ref["key"] in keys, name
        # A misspelt variable would be silently ignored by the hub: each must be a real key.
        assert [n for _p, _v, n in env_overrides({name: "x"})] == [name], f"{name} is not a config key"
    for d in docs():  # every other secretKeyRef (e.g. Redis) points at an existing key too
        for ref in re.findall(r"'secretKeyRef': \{'name': '([^']+)', 'key': '([^']+)'\}", str(d)):
            assert ref[0] == "hub-secrets" and ref[1] in keys, ref


def test_shipped_config_loads_with_the_secret_env():
    cm = find("ConfigMap", "hub-config")
    secret = find("Secret", "hub-secrets")["stringData"]
    environ = {e["name"]: secret[e["valueFrom"]["secretKeyRef"]["key"]] for e in hub_container()["env"]}
    cfg = build_config(tomllib.loads(cm["data"]["config.toml"]), environ=environ)
    assert cfg.server.port == PORT and cfg.server.host == "0.0.0.0"
    assert cfg.cluster.redis_url.startswith("redis://")
    assert cfg.sources.business.mongodb_uri.startswith("mongodb://")
    # The config mount path is where the container reads it.
    mounts = {m["name"]: m["mountPath"] for m in hub_container()["volumeMounts"]}
    assert mounts["config"] == "/etc/hub"


def test_the_state_dir_is_a_writable_volume():
    # The root filesystem is read-only: [state] dir must be a volume of the pod, mounted writable.
    cm = find("ConfigMap", "hub-config")
    cfg = build_config(tomllib.loads(cm["data"]["config.toml"]), environ={})
    mounts = {m["mountPath"]: m for m in hub_container()["volumeMounts"]}
    assert cfg.state.dir in mounts and not mounts[cfg.state.dir].get("readOnly", False)
    volumes = {v["name"]: v for v in find("Deployment", "hub")["spec"]["template"]["spec"]["volumes"]}
    volume = volumes[mounts[cfg.state.dir]["name"]]
    assert "emptyDir" in volume or "persistentVolumeClaim" in volume


def test_service_targets_the_hub_port():
    svc = find("Service", "hub")
    deployment = find("Deployment", "hub")
    assert svc["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (port,) = svc["spec"]["ports"]
    assert resolve_port(hub_container(), port["targetPort"]) == PORT


def test_redis_example_matches_the_secret_url():
    svc = find("Service", "hub-redis")
    url = find("Secret", "hub-secrets")["stringData"]["redis-url"]
    m = re.fullmatch(r"redis://:([^@]*)@([^:/]+):(\d+)/\d+", url)
    assert m, url
    assert m.group(2) == svc["metadata"]["name"] and int(m.group(3)) == svc["spec"]["ports"][0]["port"]
    assert m.group(1) == find("Secret", "hub-secrets")["stringData"]["redis-password"]


# ----------------------------------------------------------------------------- Dockerfile


def dockerfile() -> list[str]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def stages() -> list[list[str]]:
    """The Dockerfile's stages, each a list of instructions starting with its FROM."""
    out: list[list[str]] = []
    for ln in dockerfile():
        if ln.startswith("FROM "):
            out.append([])
        assert out, f"instruction before the first FROM: {ln}"
        out[-1].append(ln)
    return out


def test_dockerfile_builds_the_wheel_then_installs_it_in_a_slim_runtime():
    assert len(stages()) == 2, "expected two stages: build (the wheel) and runtime (installs it)"
    build, runtime = stages()
    m = re.fullmatch(r"FROM (python:3\.\d+-slim) AS (\w+)", build[0])
    assert m, build[0]
    assert runtime[0] == f"FROM {m.group(1)}", "runtime stage: the same slim Python as the build"
    assert any(re.fullmatch(r"RUN python -m build --wheel --outdir (\S+) \.", ln) for ln in build)
    # The runtime stage takes only the wheel from the build stage, never the sources: the page
    # must come out of the installed package, as for any user who installs the wheel.
    copies = [ln for ln in runtime if ln.startswith("COPY ")]
    assert any(ln.startswith(f"COPY --from={m.group(2)} ") for ln in copies)
    assert not [ln for ln in copies if re.search(r"\b(hub|web|hub_demo)\b", ln.split()[-2])]
    (install,) = [ln for ln in runtime if ln.startswith("RUN ") and "pip install" in ln]
    assert re.search(r"pip install \S+\.whl", install)
    for ln in dockerfile():
        assert not re.search(r"pip install .*(\s-e\s|--editable)", ln), ln


def test_dockerfile_is_slim_non_root_with_health_check_on_health(make_config):
    lines = stages()[-1]
    users = [ln.split()[1] for ln in lines if ln.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    # Everything after USER runs as that user; installing must happen before it.
    assert lines.index(f"USER {users[-1]}") > max(i for i, ln in enumerate(lines) if "pip install" in ln)
    assert f"EXPOSE {PORT}" in lines
    (health,) = [ln for ln in lines if ln.startswith("HEALTHCHECK ")]
    assert "/health" in health and "'8080'" in health and "/health" in app_routes(make_config)
    (cmd,) = [ln for ln in lines if ln.startswith("CMD ")]
    args = json.loads(cmd[4:])
    assert args[:2] == ["hub", "serve"] and args[args.index("--host") + 1] == "0.0.0.0"
    # The k8s container args and the image's CMD agree on how the hub is started.
    assert hub_container()["args"][:len(args)] == args
    # Everything COPY'd from the build context exists in the repository.
    for ln in dockerfile():
        if ln.startswith("COPY ") and not ln.startswith("COPY --from="):
            for src in ln.split()[1:-1]:
                assert (ROOT / src).exists(), src


def test_dockerfile_is_read_only_root_friendly():
    runtime = stages()[-1]
    env = " ".join(ln for ln in runtime if ln.startswith("ENV "))
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # no __pycache__ writes at run time
    # No WORKDIR in a writable directory: `python -c` (the HEALTHCHECK) puts the cwd on sys.path.
    assert not [ln for ln in runtime if ln.startswith("WORKDIR") and "tmp" in ln]
    header = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^#\s+docker run --read-only --tmpfs /tmp .*hub:", header, re.M)


def test_healthcheck_command_works_against_a_running_hub(tmp_path):
    # Run the HEALTHCHECK's exact python -c command against a real `hub serve` on PORT's stand-in.
    (health,) = [ln for ln in dockerfile() if ln.startswith("HEALTHCHECK ")]
    argv = json.loads(health[health.index("CMD ") + 4:])
    hub = HubProcess({"sources": {"prometheus": {"enabled": False}, "business": {"enabled": False}}},
                     tmp_path).start()
    env = {**os.environ, "HUB_SERVER__PORT": str(hub.port)}
    try:
        env = {**os.environ, "HUB_SERVER__PORT": str(hub.port)}
        res = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=10)
        assert res.returncode == 0, res.stderr
    finally:
        hub.stop()
    res = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, timeout=10)
    assert res.returncode != 0  # and it fails when nothing answers


# ----------------------------------------------------------------------------- Grafana


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []))
            walk(p.get("panels", []))

    walk(dash["panels"])
    for var in dash["templating"]["list"]:
        q = var.get("query")
        if isinstance(q, dict):
            exprs.append(q["query"])
    return exprs


async def exported_names(aiohttp_client: Any, make_config: Any) -> set[str]:
    """Every series name /metrics of a real app can export, including labelled families without children yet."""
    client = await aiohttp_client(create_app(make_config()))
    text = await (await client.get("/metrics")).text()
    names = {ln.split("{")[0].split(" ")[0] for ln in text.splitlines() if ln and not ln.startswith("#")}
    # A family with no children yet (e.g. hub_ws_rejected_total before any rejection) has only
    # its HELP/TYPE lines. The text format names a counter's family with its _total already,
    # a histogram's without _bucket/_count/_sum.
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        if kind == "counter":
            names.add(family if family.endswith("_total") else family + "_total")
        elif kind in ("histogram", "summary"):
            names |= {family + s for s in ("_bucket", "_count", "_sum")} - (
                {family + "_bucket"} if kind == "summary" else set())
        else:
            names.add(family)
    return names


async def test_dashboard_only_uses_metrics_the_hub_exports(aiohttp_client, make_config):
    dash = json.loads(DASHBOARD.read_text())
    assert dash["title"] and dash["uid"] and dash["panels"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    exported = await exported_names(aiohttp_client, make_config)
    used: set[str] = set()
    for expr in dashboard_exprs():
        used |= set(re.findall(r"\b((?:hub|process)_[a-z_]+)\b", expr))
    assert used, "no hub metrics in the dashboard?"
    assert not used - exported, f"not exported by the hub: {sorted(used - exported)}"
    # The panels the dashboard promises.
    for needed in ("hub_ws_connections", "hub_ws_messages_sent_total", "hub_ws_disconnects_total",
                   "hub_broadcast_duration_seconds_bucket", "hub_collect_duration_seconds_bucket",
                   "hub_collect_errors_total", "hub_source_up", "hub_seq", "hub_cluster_leader",
                   "hub_cluster_redis_up", "process_resident_memory_bytes", "process_cpu_seconds_total"):
        assert needed in used, needed


def test_dashboard_queries_are_valid_promql(tmp_path):
    promtool = need_program("promtool", hint="Debian/Ubuntu package 'prometheus'")
    # promtool parses every expression as a recording rule; Grafana's variables get stand-ins.
    rules = [{"record": f"dashboard:expr_{i}",
              "expr": e.replace("$__rate_interval", "1m").replace("$instance", ".*")}
             for i, e in enumerate(dashboard_exprs()) if not e.startswith("label_values(")]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    res = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("expr", ["hub_nope_total", "process_fake_bytes"])
async def test_unknown_metric_names_are_caught(aiohttp_client, make_config, expr):
    # The check above can fail: names the hub does not export are not in the exported set.
    assert expr not in await exported_names(aiohttp_client, make_config)

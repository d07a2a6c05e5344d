"""deploy/k8s renders, with kustomize, into objects the Kubernetes API accepts and workers that
start: every object is checked offline against the Kubernetes schemas (kubernetes-validate, strict:
an unknown field fails), and the rendered workers against what the worker needs (probes, its state
volume, its advertised URL, no service links, Secrets that exist, TRUST_ variables that are
settings, and an environment the settings accept).

kustomize is the pinned one at .local/bin/kustomize (deploy/k8s/install-kustomize builds it from
the Go module proxy). In CI (CI=true) .ci/run installs it first and a missing one fails the test;
elsewhere the test builds it on demand.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from streams.settings import Settings
from tests.support.tls_files import make_ca

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZE = ROOT / ".local" / "bin" / "kustomize"
INSTALL = K8S / "install-kustomize"
RENDERS = ("base", "overlays/secured")
#: The Kubernetes version whose schemas the objects are checked against (a StatefulSet's
#: persistentVolumeClaimRetentionPolicy is stable since 1.32).
KUBERNETES_VERSION = "1.32.0"
HEADLESS_SERVICE = "trust-scorer"
STATE_CLAIM = "state"
WEB_PORT = 6066
#: docs/benchmarks.md, state: a worker restoring 1,000,000 agents was ready 20.1 s after its start.
RESTORE_MILLION_AGENTS_S = 20.1
SETTING_NAMES = frozenset(f"TRUST_{name.upper()}" for name in Settings.model_fields)
POD_KINDS = ("StatefulSet", "Deployment", "DaemonSet", "Job", "CronJob", "ReplicaSet", "Pod")

Object = dict[str, Any]


def _kustomize() -> Path:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        if not os.access(KUSTOMIZE, os.X_OK):
            pytest.fail(f"no kustomize at {KUSTOMIZE}: .ci/run builds it first (make kustomize)")
        return KUSTOMIZE
    # Here and not in CI: build it when missing (a few minutes the first time; then a no-op).
    result = subprocess.run([str(INSTALL)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        pytest.fail(f"{INSTALL} failed:\n{result.stderr[-3000:]}")
    return KUSTOMIZE


def _only_examples(directory: str, names: list[str]) -> set[str]:
    """Leave out of the copy any real secret a developer keeps in a secrets/ folder."""
    if Path(directory).name != "secrets":
        return set()
    return {name for name in names if not name.endswith(".example")}


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of deploy/k8s with the secrets' example files in place of the real ones, and a
    throwaway CA as the secured overlay's ca.pem (the settings load it as PEM)."""
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy, ignore=_only_examples)
    for example in copy.rglob("secrets/*.example"):
        shutil.copyfile(example, example.with_suffix(""))
    ca = make_ca(tmp_path_factory.mktemp("ca"))
    shutil.copyfile(ca.cert, copy / "overlays" / "secured" / "secrets" / "ca.pem")
    return copy


@pytest.fixture(scope="module")
def rendered(tree: Path) -> dict[str, list[Object]]:
    kustomize = _kustomize()
    renders = {}
    for name in RENDERS:
        result = subprocess.run(
            [str(kustomize), "build", str(tree / name)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert result.returncode == 0, f"kustomize build {name}:\n{result.stderr}"
        renders[name] = [o for o in yaml.safe_load_all(result.stdout) if o]
    return renders


@pytest.fixture(params=RENDERS)
def objects(request: pytest.FixtureRequest, rendered: dict[str, list[Object]]) -> list[Object]:
    return rendered[request.param]


def _one(objects: list[Object], kind: str, name: str | None = None) -> Object:
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} objects of kind {kind} named {name}"
    return found[0]


def _pod_specs(objects: list[Object]) -> Iterator[tuple[Object, Object]]:
    """(object, pod spec) for every object that makes pods."""
    for o in objects:
        if o["kind"] == "Pod":
            yield o, o["spec"]
        elif o["kind"] == "CronJob":
            yield o, o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif o["kind"] in POD_KINDS:
            yield o, o["spec"]["template"]["spec"]


def _containers(spec: Object) -> list[Object]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def _worker(objects: list[Object]) -> tuple[Object, Object, Object]:
    statefulset = _one(objects, "StatefulSet")
    spec = statefulset["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return statefulset, spec, container


def _env(container: Object, name: str) -> Object:
    entries = [e for e in container.get("env", []) if e["name"] == name]
    assert len(entries) == 1, f"{len(entries)} entries for {name} in {container['name']}"
    return entries[0]


def _secret_data(objects: list[Object], name: str) -> dict[str, bytes]:
    secret = _one(objects, "Secret", name)
    data = {k: base64.b64decode(v) for k, v in secret.get("data", {}).items()}
    data.update({k: v.encode() for k, v in secret.get("stringData", {}).items()})
    return data


# --- the objects -------------------------------------------------------------------------------


def test_every_rendered_object_is_valid_against_the_kubernetes_schemas(
    objects: list[Object],
) -> None:
    kinds = {o["kind"] for o in objects}
    assert {"StatefulSet", "Service", "ConfigMap", "Secret", "PodDisruptionBudget"} <= kinds
    assert {"NetworkPolicy", "Job"} <= kinds
    problems = []
    for o in objects:
        where = f"{o['kind']}/{o['metadata']['name']}"
        try:
            kubernetes_validate.validate(o, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            problems.append(f"{where}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            problems.append(f"{where}: {exc.message}")
    assert not problems, f"not valid Kubernetes {KUBERNETES_VERSION}:\n" + "\n".join(problems)


def test_the_secured_overlay_puts_everything_in_its_restricted_namespace(
    rendered: dict[str, list[Object]],
) -> None:
    objects = rendered["overlays/secured"]
    namespace = _one(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for o in objects:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == namespace["metadata"]["name"], o["kind"]


# --- the workers -------------------------------------------------------------------------------


def test_probes_use_the_health_and_readiness_pages_on_the_web_port(objects: list[Object]) -> None:
    _, _, container = _worker(objects)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": WEB_PORT}
    paths = {
        probe: container[probe]["httpGet"]["path"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert paths == {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ("http", WEB_PORT), probe
    # Liveness restarts a worker that has not answered for this long: never one that restores.
    liveness = container["livenessProbe"]
    silent = liveness["periodSeconds"] * liveness["failureThreshold"]
    assert silent >= 2 * RESTORE_MILLION_AGENTS_S, silent
    assert liveness["timeoutSeconds"] < liveness["periodSeconds"]


def test_each_worker_keeps_its_state_on_its_own_volume_claim(objects: list[Object]) -> None:
    statefulset, spec, container = _worker(objects)
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == STATE_CLAIM
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    state_dir = _env(container, "TRUST_STATE_DIR")["value"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts[state_dir] == STATE_CLAIM
    # Nothing else is writable but the scratch space: the root filesystem is read-only.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_each_worker_advertises_its_own_name_under_the_headless_service(
    objects: list[Object],
) -> None:
    statefulset, _, container = _worker(objects)
    assert statefulset["spec"]["serviceName"] == HEADLESS_SERVICE
    headless = _one(objects, "Service", HEADLESS_SERVICE)
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    names = [e["name"] for e in container["env"]]
    url = _env(container, "TRUST_WEB_ADVERTISED_URL")["value"]
    assert "$(POD_NAME)" in url and f".{HEADLESS_SERVICE}." in url, url
    assert url.endswith(f":{WEB_PORT}"), url
    # Kubernetes expands $(VAR) only from variables defined before it.
    for variable, field in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
        if f"$({variable})" in url:
            assert _env(container, variable)["valueFrom"]["fieldRef"]["fieldPath"] == field
            assert names.index(variable) < names.index("TRUST_WEB_ADVERTISED_URL")
    assert _env(container, "TRUST_WEB_HOST")["value"] == "0.0.0.0"


def test_no_pod_gets_service_link_variables(objects: list[Object]) -> None:
    # A Service named trust-... would give every pod TRUST_..._SERVICE_HOST, which is not a
    # setting: the worker would refuse to start.
    specs = list(_pod_specs(objects))
    assert {o["kind"] for o, _ in specs} >= {"StatefulSet", "Job"}
    for o, spec in specs:
        assert spec.get("enableServiceLinks") is False, f"{o['kind']}/{o['metadata']['name']}"


def test_every_secret_and_config_map_referenced_exists_with_its_keys(
    objects: list[Object],
) -> None:
    secrets = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Secret"}
    config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    checked = 0
    for o, spec in _pod_specs(objects):
        where = f"{o['kind']}/{o['metadata']['name']}"
        for volume in spec.get("volumes", []):
            if "secret" in volume:
                assert volume["secret"]["secretName"] in secrets, where
                checked += 1
        for container in _containers(spec):
            for source in container.get("envFrom", []):
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, where
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps, where
                checked += 1
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref is not None:
                    assert ref["name"] in secrets, f"{where}: {entry['name']}"
                    assert ref["key"] in _secret_data(objects, ref["name"]), entry["name"]
                    checked += 1
    assert checked >= 4


def test_every_trust_variable_is_a_setting(objects: list[Object]) -> None:
    config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    seen = set()
    for o, spec in _pod_specs(objects):
        for container in _containers(spec):
            names = {e["name"] for e in container.get("env", [])}
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    names |= set(config_maps[source["configMapRef"]["name"]]["data"])
            trust = {n for n in names if n.upper().startswith("TRUST_")}
            unknown = trust - SETTING_NAMES
            assert not unknown, f"{o['kind']}/{o['metadata']['name']}: not settings: {unknown}"
            seen |= trust
    assert {"TRUST_KAFKA_BOOTSTRAP_SERVERS", "TRUST_STATE_DIR", "TRUST_API_READ_TOKEN"} <= seen


def _environment(objects: list[Object], spec: Object, container: Object, files: Path) -> dict:
    """The container's variables as Kubernetes would set them for the pod trust-scorer-0: the
    ConfigMaps, Secret values, the downward API, $(VAR) expanded; a path into a mounted Secret is
    replaced by a file holding that key's value (the settings open the files they are given)."""
    config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]]["data"])
    fields = {"metadata.name": "trust-scorer-0", "metadata.namespace": "scoring"}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: env.get(m.group(1), m.group(0)),
                entry["value"],
            )
        elif "fieldRef" in entry["valueFrom"]:
            env[entry["name"]] = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = _secret_data(objects, ref["name"])[ref["key"]].decode()
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret is None:
            continue
        prefix = mount["mountPath"].rstrip("/") + "/"
        for name, value in env.items():
            if value.startswith(prefix):
                key = value.removeprefix(prefix)
                data = _secret_data(objects, secret["secretName"])
                assert key in data, f"{name}={value}: no key {key} in {secret['secretName']}"
                path = files / secret["secretName"] / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data[key])
                env[name] = str(path)
    return env


def test_the_rendered_environment_is_one_the_settings_accept(
    objects: list[Object], tmp_path: Path
) -> None:
    for o, spec in _pod_specs(objects):
        for container in _containers(spec):
            env = _environment(objects, spec, container, tmp_path)
            values = {
                k.lower().removeprefix("trust_"): v for k, v in env.items() if k[:6] == "TRUST_"
            }
            settings = Settings(**values)
            assert settings.kafka_bootstrap_servers == env["TRUST_KAFKA_BOOTSTRAP_SERVERS"]
            if o["kind"] == "StatefulSet":
                assert settings.web_advertised_url == (
                    f"http://trust-scorer-0.{HEADLESS_SERVICE}.scoring.svc.cluster.local:{WEB_PORT}"
                )
                assert settings.api_read_token.get_secret_value()
                assert settings.admin_token.get_secret_value()


def test_the_secured_overlay_connects_as_the_worker_principal_over_sasl_ssl(
    rendered: dict[str, list[Object]], tmp_path: Path
) -> None:
    objects = rendered["overlays/secured"]
    for _, spec in _pod_specs(objects):
        (container,) = spec["containers"]
        env = _environment(objects, spec, container, tmp_path)
        assert env["TRUST_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert env["TRUST_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
        # The example's principal (docs/security.md); the password comes from the Secret alone.
        assert env["TRUST_KAFKA_SASL_USERNAME"] == "worker"
        assert "secretKeyRef" in _env(container, "TRUST_KAFKA_SASL_PASSWORD")["valueFrom"]
        assert Path(env["TRUST_KAFKA_SSL_CAFILE"]).read_text().startswith("-----BEGIN CERT")
        mount = next(m for m in container["volumeMounts"] if m["name"] == "kafka-credentials")
        assert mount["readOnly"] is True


def test_every_container_runs_unprivileged(objects: list[Object]) -> None:
    for o, spec in _pod_specs(objects):
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, o["kind"]
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec.get("automountServiceAccountToken") is False
        for container in _containers(spec):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["readOnlyRootFilesystem"] is True
            assert context["capabilities"]["drop"] == ["ALL"]
            assert container["resources"]["requests"] and container["resources"]["limits"]


def test_services_budget_and_policy_select_the_workers(objects: list[Object]) -> None:
    statefulset, spec, _ = _worker(objects)
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= labels.items()
    api = _one(objects, "Service", "trust-scorer-api")
    assert api["spec"]["type"] == "ClusterIP"
    for service in (api, _one(objects, "Service", HEADLESS_SERVICE)):
        assert service["spec"]["selector"].items() <= labels.items()
        assert [p["port"] for p in service["spec"]["ports"]] == [WEB_PORT]
    budget = _one(objects, "PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
    annotations = statefulset["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(WEB_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"
    # The stop must have time for its final write.
    assert spec["terminationGracePeriodSeconds"] >= 30


def test_the_network_policy_admits_only_workers_and_labelled_clients_to_the_api(
    objects: list[Object],
) -> None:
    statefulset, _, _ = _worker(objects)
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    policy = _one(objects, "NetworkPolicy")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": WEB_PORT}]
    peers = rule["from"]
    workers = [p for p in peers if "namespaceSelector" not in p]
    clients = [p for p in peers if "namespaceSelector" in p]
    assert len(workers) == 1 and workers[0]["podSelector"]["matchLabels"].items() <= labels.items()
    assert len(clients) == 1
    assert clients[0]["podSelector"]["matchLabels"] == {"trust-streams.io/api-client": "true"}
    assert len(peers) == 2  # nothing else: no ipBlock, no unlabelled peer


def test_the_topics_job_creates_or_checks_the_topics(objects: list[Object]) -> None:
    job = _one(objects, "Job")
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["args"][0] == "topics"
    assert set(container["args"][1:]) <= {"--check"}
    assert spec["restartPolicy"] in ("OnFailure", "Never")
    _, _, worker = _worker(objects)
    assert container["image"] == worker["image"]
    assert container["envFrom"] == worker["envFrom"]

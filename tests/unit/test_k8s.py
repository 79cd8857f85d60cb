"""The Kubernetes manifests (deploy/k8s) validate against Kubernetes' own schemas and stay in step
with the code, as test_deployment.py keeps docker-compose.yml.

kustomize is a Go program, so the base is rendered here as far as it uses kustomize: its
resources, its two generators and its labels. A kustomization that uses more fails
``test_the_base_uses_only_what_this_renderer_knows`` until the renderer learns it."""

from __future__ import annotations

import base64
import copy
import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import orjson
import pytest
import yaml

from clicktrail.config import Settings
from clicktrail.health import CHECK_TIMEOUT
from clicktrail.metrics import PipelineGauges
from clicktrail.queue import QUEUE, celery_settings, task_message
from clicktrail.web.server import GRACEFUL_SECONDS
from tests.support.paths import PROJECT_ROOT
from tests.support.web import twin_app, twin_services
from tests.unit.test_deployment import compose, procfile, variables_read_by_settings

K8S = PROJECT_ROOT / "deploy" / "k8s"
COMPONENTS = {"keda": K8S / "autoscaling" / "keda", "hpa": K8S / "autoscaling" / "hpa"}

# The oldest Kubernetes the manifests are for (PodDisruptionBudget's unhealthyPodEvictionPolicy
# is on by default from 1.27) and the newest the pinned kubernetes-validate has schemas of.
KUBERNETES_VERSIONS = ("1.27", "1.37")

# Kinds of custom resources: no schema of theirs ships with kubernetes-validate; the KEDA tests
# below check what Clicktrail relies on in them.
CUSTOM_KINDS = {("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication")}

# What the base's kustomization may use: the keys render() understands.
RENDERED_KEYS = {
    "apiVersion", "kind", "labels", "resources", "configMapGenerator", "secretGenerator",
}  # fmt: skip
# What the components may use: their resources are added as they are; the rest is checked below.
COMPONENT_KEYS = {"apiVersion", "kind", "resources", "patches", "configurations"}


def load(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text())
    assert isinstance(loaded, dict), path
    return loaded


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def env_file(path: Path) -> dict[str, str]:
    """A kustomize env file: KEY=VALUE lines, # comments and blank lines skipped."""
    pairs = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: {line!r} is not KEY=VALUE"
        assert key not in pairs, f"{path.name}: {key} twice"
        pairs[key] = value
    return pairs


def generated(kind: str, generator: dict[str, Any], root: Path) -> dict[str, Any]:
    """What a configMapGenerator or secretGenerator entry makes (its name without the hash)."""
    assert set(generator) <= {"name", "envs"}, generator
    data: dict[str, str] = {}
    for name in generator["envs"]:
        data |= env_file(root / name)
    resource: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": generator["name"]},
    }
    if kind == "Secret":
        resource["type"] = "Opaque"
        resource["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        resource["data"] = data
    return resource


def render() -> list[dict[str, Any]]:
    """The base as kustomize builds it, but for the generated names' hash suffix."""
    kustomization = load(K8S / "kustomization.yaml")
    resources = [doc for name in kustomization["resources"] for doc in documents(K8S / name)]
    resources += [generated("ConfigMap", g, K8S) for g in kustomization["configMapGenerator"]]
    resources += [generated("Secret", g, K8S) for g in kustomization["secretGenerator"]]
    for entry in kustomization["labels"]:
        assert set(entry) <= {"pairs", "includeTemplates"}, entry
        for resource in resources:
            resource["metadata"].setdefault("labels", {}).update(entry["pairs"])
            template = resource.get("spec", {}).get("template")
            if entry.get("includeTemplates") and template is not None:
                template.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    return resources


def component_resources(name: str) -> list[dict[str, Any]]:
    root = COMPONENTS[name]
    return [
        doc
        for entry in load(root / "kustomization.yaml")["resources"]
        for doc in documents(root / entry)
    ]


BASE = render()


def find(kind: str, name: str, resources: list[dict[str, Any]] = BASE) -> dict[str, Any]:
    found = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [r for r in BASE if r["kind"] == kind]


def workloads() -> list[dict[str, Any]]:
    """Every Deployment and Job: what runs Clicktrail's image."""
    return [r for r in BASE if r["kind"] in ("Deployment", "Job")]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, workload["metadata"]["name"]
    return containers[0]


def deployment(process: str) -> dict[str, Any]:
    return find("Deployment", f"clicktrail-{process}")


def environment(workload: dict[str, Any]) -> dict[str, str]:
    """The variables the container gets, with the base's (placeholder) values; every source it
    names exists, and so does every key it asks for unless that key is optional."""
    spec = container(workload)
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        [(kind, ref)] = [(k, v) for k, v in source.items() if k in ("configMapRef", "secretRef")]
        found = find("ConfigMap" if kind == "configMapRef" else "Secret", ref["name"])
        env |= {k: decode(found, k) for k in found["data"]}
    for variable in spec.get("env", []):
        if "value" in variable:
            env[variable["name"]] = variable["value"]
            continue
        [(kind, ref)] = variable["valueFrom"].items()
        found = find("ConfigMap" if kind == "configMapKeyRef" else "Secret", ref["name"])
        if ref["key"] in found["data"]:
            env[variable["name"]] = decode(found, ref["key"])
        else:
            assert ref.get("optional"), (
                f"{workload['metadata']['name']}: no {ref['key']} in {ref['name']}"
            )
    return env


def decode(resource: dict[str, Any], key: str) -> str:
    value: str = resource["data"][key]
    return base64.b64decode(value).decode() if resource["kind"] == "Secret" else value


def settings_of(workload: dict[str, Any]) -> Settings:
    return Settings.from_env(environment(workload))


def ports(workload: dict[str, Any]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container(workload).get("ports", [])}


def cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def megabytes(quantity: str) -> float:
    mebibytes = {"Mi": 1, "Gi": 1024}[quantity[-2:]] * float(quantity[:-2])
    return mebibytes * 1.048576


def probes(workload: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        if kind in container(workload):
            yield kind, container(workload)[kind]


# --- the kustomization ------------------------------------------------------------------------


def referenced_files(root: Path) -> set[Path]:
    kustomization = load(root / "kustomization.yaml")
    names = [*kustomization.get("resources", []), *kustomization.get("configurations", [])]
    for generator in (
        *kustomization.get("configMapGenerator", []),
        *kustomization.get("secretGenerator", []),
    ):
        names += generator.get("envs", [])
    names += [patch["path"] for patch in kustomization.get("patches", []) if "path" in patch]
    for name in names:
        assert (root / name).is_file(), (
            f"{root.name}/kustomization.yaml names {name}, not a file here"
        )
    return {root / "kustomization.yaml", *(root / name for name in names)}


def test_every_file_in_the_folder_is_listed_by_a_kustomization() -> None:
    kustomizations = {path.parent for path in K8S.rglob("kustomization.yaml")}
    present = {path for path in K8S.rglob("*") if path.is_file()}
    listed = {path for root in kustomizations for path in referenced_files(root)}

    assert kustomizations == {K8S, *COMPONENTS.values()}
    assert present - listed == set(), "files no kustomization lists"
    assert load(K8S / "kustomization.yaml")["kind"] == "Kustomization"
    for root in COMPONENTS.values():
        assert load(root / "kustomization.yaml")["kind"] == "Component"


def test_the_base_uses_only_what_this_renderer_knows() -> None:
    base = load(K8S / "kustomization.yaml")
    assert set(base) <= RENDERED_KEYS, set(base) - RENDERED_KEYS
    for root in COMPONENTS.values():
        component = load(root / "kustomization.yaml")
        assert set(component) <= COMPONENT_KEYS, (root.name, set(component) - COMPONENT_KEYS)


def test_the_base_holds_no_custom_resource() -> None:
    assert {(r["apiVersion"], r["kind"]) for r in BASE} & CUSTOM_KINDS == set()
    assert {r["kind"] for r in BASE} == {
        "Deployment", "Service", "PodDisruptionBudget", "Job", "ConfigMap", "Secret",
    }  # fmt: skip


def test_names_are_unique_per_kind() -> None:
    for resources in (BASE, *(component_resources(name) for name in COMPONENTS)):
        keys = [(r["kind"], r["metadata"]["name"]) for r in resources]
        assert len(keys) == len(set(keys)), keys


def test_the_components_patch_what_the_base_has() -> None:
    for name, root in COMPONENTS.items():
        for patch in load(root / "kustomization.yaml").get("patches", []):
            target = find(patch["target"]["kind"], patch["target"]["name"])
            for op in yaml.safe_load(patch["patch"]):
                assert op["op"] == "remove", (name, op)
                *parents, leaf = op["path"].strip("/").split("/")
                node = target
                for part in parents:
                    node = node[part]
                assert leaf in node, (name, op["path"])


# --- schemas ----------------------------------------------------------------------------------


def every_resource() -> list[tuple[str, dict[str, Any]]]:
    named = [("base", r) for r in BASE]
    named += [(name, r) for name in COMPONENTS for r in component_resources(name)]
    return named


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_resource_validates_against_the_kubernetes_schema(version: str) -> None:
    validated, custom = 0, 0
    for where, resource in every_resource():
        if (resource["apiVersion"], resource["kind"]) in CUSTOM_KINDS:
            custom += 1
            continue
        label = f"{where}: {resource['kind']}/{resource['metadata']['name']}"
        try:
            kubernetes_validate.validate(resource, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{label} against {version}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{label}: {exc.message}")
        validated += 1

    assert custom == 2  # the ScaledObject and the TriggerAuthentication, checked further down
    assert validated >= len(BASE)  # every resource of the base at least


def test_strict_validation_refuses_a_misspelt_field() -> None:
    api = copy.deepcopy(deployment("api"))
    container(api)["readinesProbe"] = container(api).pop("readinessProbe")

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(api, KUBERNETES_VERSIONS[0], strict=True)


# --- the processes ----------------------------------------------------------------------------


def without_concurrency(argv: list[str]) -> list[str]:
    at = argv.index("--concurrency")
    return argv[:at] + argv[at + 2 :]


def test_every_procfile_process_runs_in_a_deployment_with_the_same_program() -> None:
    processes = procfile()

    assert {f"clicktrail-{name}" for name in processes} == {
        d["metadata"]["name"] for d in of_kind("Deployment")
    }
    for name, argv in processes.items():
        command = container(deployment(name))["command"]
        if name == "worker":  # but for --concurrency, below
            command, argv = without_concurrency(command), without_concurrency(argv)
        assert command[: len(argv)] == argv, name
    worker = container(deployment("worker"))["command"]
    assert worker[worker.index("--queues") + 1] == QUEUE
    beat = container(deployment("beat"))["command"]
    assert beat[beat.index("--scheduler") + 1] == "redbeat.RedBeatScheduler"


def test_one_image_runs_every_process_as_the_images_user() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    user = re.search(r"^USER (\S+)$", dockerfile, re.M)
    assert user is not None
    useradd = re.search(rf"useradd .*--uid (\d+) .*\b{user.group(1)}$", dockerfile, re.M)
    assert useradd is not None
    uid = int(useradd.group(1))

    assert len({container(w)["image"] for w in workloads()}) == 1
    for workload in workloads():
        pod = workload["spec"]["template"]["spec"]
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsUser"] == uid, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        security = container(workload)["securityContext"]
        assert security["readOnlyRootFilesystem"] is True, name
        assert security["allowPrivilegeEscalation"] is False, name
        assert security["capabilities"]["drop"] == ["ALL"], name
        # Nothing here talks to the Kubernetes API.
        assert pod["automountServiceAccountToken"] is False, name


def writable_dirs(workload: dict[str, Any]) -> set[str]:
    pod = workload["spec"]["template"]["spec"]
    empty = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
    return {
        m["mountPath"] for m in container(workload).get("volumeMounts", []) if m["name"] in empty
    }


def test_what_the_processes_write_is_on_an_empty_dir() -> None:
    for workload in workloads():
        name = workload["metadata"]["name"]
        # Python's tempfile lands in /tmp.
        assert "/tmp" in writable_dirs(workload), name
        multiproc = settings_of(workload).prometheus_multiproc_dir
        if multiproc is not None:
            assert any(multiproc.is_relative_to(d) for d in writable_dirs(workload)), name
    for process in ("api", "worker"):  # several processes share their metrics
        assert settings_of(deployment(process)).prometheus_multiproc_dir is not None, process


def test_no_service_links_reach_the_environment() -> None:
    # KAFKA_* and SCHEMA_REGISTRY_* variables become client properties: the SERVICE_HOST and
    # PORT variables a Service named kafka or schema-registry would inject break the clients.
    for workload in workloads():
        assert workload["spec"]["template"]["spec"]["enableServiceLinks"] is False


# --- the environment --------------------------------------------------------------------------


def test_every_variable_set_is_one_clicktrail_reads_with_a_value_it_takes() -> None:
    known = variables_read_by_settings()

    for workload in workloads():
        env = environment(workload)
        unknown = {v for v in env if v not in known and not v.startswith("KAFKA_")}
        assert unknown == set(), workload["metadata"]["name"]
        Settings.from_env(env)  # raises on a value it refuses


def compose_clicktrail_services() -> dict[str, dict[str, Any]]:
    return {
        name: s for name, s in compose()["services"].items() if s.get("image") == "clicktrail:local"
    }


def test_each_process_gets_what_docker_compose_gives_it() -> None:
    for name, service in compose_clicktrail_services().items():
        workload = find("Job", "clicktrail-setup") if name == "setup" else deployment(name)
        # Optional variables the base leaves out of its Secrets count as given when named.
        given = set(environment(workload)) | {v["name"] for v in container(workload).get("env", [])}
        assert set(service["environment"]) - given == set(), name


# Where the cluster differs from compose's single machine: the hosts are yours, not compose's
# services, and a real Kafka cluster keeps three replicas (the compose file says so too).
NOT_MIRRORED = {
    "REDIS_URL", "DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL",
    "KAFKA_TOPIC_REPLICATION_FACTOR",
}  # fmt: skip


def test_the_settings_mirror_docker_compose_where_it_sets_a_value() -> None:
    for name, service in compose_clicktrail_services().items():
        workload = find("Job", "clicktrail-setup") if name == "setup" else deployment(name)
        env = environment(workload)
        for variable, value in service["environment"].items():
            # ${VAR:-default}: the default; ${VAR:?why}: required, the operator's to give.
            default = re.fullmatch(r"\$\{\w+:-(.*)\}", str(value))
            if variable in NOT_MIRRORED or ("${" in str(value) and default is None):
                continue
            if default is not None and variable not in env:
                continue  # optional here (DEV_WRITE_KEY)
            expected = default.group(1) if default is not None else str(value)
            assert env[variable] == expected, (name, variable)
    assert settings_of(deployment("api")).topic_replication_factor == 3


def test_secrets_are_in_secrets_and_each_token_only_where_it_is_checked() -> None:
    config = find("ConfigMap", "clicktrail-config")["data"]
    secret = {"DATABASE_URL", "REDIS_URL", "SENTRY_DSN", "PSEUDONYMIZATION_KEY", "ADMIN_TOKEN",
              "METRICS_TOKEN", "FLOWER_BASIC_AUTH", "DEV_WRITE_KEY"}  # fmt: skip
    assert set(config) & secret == set()
    for workload in workloads():
        env = {v["name"] for v in container(workload).get("env", [])} | set(environment(workload))
        name = workload["metadata"]["name"]
        assert ("ADMIN_TOKEN" in env) == (name == "clicktrail-api"), name
        assert ("METRICS_TOKEN" in env) == (name == "clicktrail-api"), name
        assert ("FLOWER_BASIC_AUTH" in env) == (name == "clicktrail-flower"), name
        assert ("DEV_WRITE_KEY" in env) == (name == "clicktrail-setup"), name
    # A replaced Secret without them stops the API and Flower rather than leaving them open.
    for process, variable in (("api", "METRICS_TOKEN"), ("flower", "FLOWER_BASIC_AUTH")):
        (ref,) = [v for v in container(deployment(process))["env"] if v["name"] == variable]
        assert not ref["valueFrom"]["secretKeyRef"].get("optional"), variable


def test_the_setup_job_runs_what_docker_composes_setup_runs() -> None:
    def steps(script: str) -> list[str]:
        return re.findall(r"clicktrail ([a-z-]+(?: register)?)", script)

    job = find("Job", "clicktrail-setup")
    script = container(job)["command"][-1]

    assert container(job)["command"][:2] == ["sh", "-c"]
    assert steps(script) == steps(compose()["services"]["setup"]["command"][-1])
    assert steps(script) == ["migrate", "topics", "schemas register", "dev-source"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"


# --- ports and probes -------------------------------------------------------------------------


def test_ports_match_where_the_processes_listen() -> None:
    dockerfile = (PROJECT_ROOT / "Dockerfile").read_text()
    expose = re.search(r"^EXPOSE (\d+)$", dockerfile, re.M)
    assert expose is not None
    exposed = int(expose.group(1))
    api = settings_of(deployment("api"))
    flower = container(deployment("flower"))["command"]

    assert (
        ports(deployment("api"))
        == {"http": int(api.api_bind.rsplit(":", 1)[1])}
        == {"http": exposed}
    )
    assert api.api_bind.startswith("0.0.0.0:")
    assert ports(deployment("worker")) == {
        "metrics": settings_of(deployment("worker")).worker_metrics_port
    }
    assert ports(deployment("sink")) == {
        "metrics": settings_of(deployment("sink")).sink_metrics_port
    }
    assert ports(deployment("flower")) == {
        "http": int(next(a for a in flower if a.startswith("--port="))[7:])
    }
    for process in ("worker", "sink"):
        assert settings_of(deployment(process)).metrics_host == "0.0.0.0", process


def test_each_service_reaches_its_pods_on_a_port_they_open() -> None:
    services = of_kind("Service")

    assert {s["metadata"]["name"] for s in services} == {"clicktrail-api", "clicktrail-flower"}
    for service in services:
        target = deployment(service["metadata"]["name"].removeprefix("clicktrail-"))
        labels = target["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= labels.items()
        assert target["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
        for port in service["spec"]["ports"]:
            assert ports(target)[port["targetPort"]] == port["port"]


def test_every_probe_uses_a_port_the_container_opens() -> None:
    for workload in workloads():
        for kind, probe in probes(workload):
            if "httpGet" in probe:
                assert probe["httpGet"]["port"] in ports(workload), (
                    workload["metadata"]["name"],
                    kind,
                )


def failing() -> None:
    raise RuntimeError("down")


def test_the_apis_probes_ask_what_they_should_of_paths_the_app_serves() -> None:
    healthy = twin_app(twin_services()).test_client()
    outage = twin_app(twin_services(checks={"redis": failing})).test_client()
    behind = twin_app(twin_services(checks={"kafka": failing, "workers": failing})).test_client()
    api = dict(probes(deployment("api")))

    assert set(api) == {"startupProbe", "readinessProbe", "livenessProbe"}
    for kind, probe in api.items():
        assert healthy.get(probe["httpGet"]["path"]).status_code == 200, kind
    # Readiness follows the dependencies; liveness and start-up never do, so that an outage does
    # not restart every API pod;
    assert outage.get(api["readinessProbe"]["httpGet"]["path"]).status_code == 503
    # but only those taking events needs: with Kafka or the workers away, the queue holds them.
    assert behind.get(api["readinessProbe"]["httpGet"]["path"]).status_code == 200
    assert behind.get("/readyz").status_code == 503
    assert outage.get(api["livenessProbe"]["httpGet"]["path"]).status_code == 200
    assert outage.get(api["startupProbe"]["httpGet"]["path"]).status_code == 200
    # /readyz waits up to CHECK_TIMEOUT + 1 s for its checks.
    assert api["readinessProbe"]["timeoutSeconds"] > CHECK_TIMEOUT + 1


def test_the_worker_is_ready_by_its_health_command() -> None:
    worker = dict(probes(deployment("worker")))

    assert set(worker) == {"readinessProbe"}  # no liveness on shared dependencies
    command = worker["readinessProbe"]["exec"]["command"]
    assert command == ["python", "-m", "clicktrail.workers.health"]
    assert importlib.util.find_spec("clicktrail.workers.health") is not None
    assert worker["readinessProbe"]["timeoutSeconds"] > CHECK_TIMEOUT + 1


def test_a_health_run_leaves_no_metric_files_in_the_workers_multiprocess_directory(
    tmp_path: Path,
) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
        "PYTHONPATH": str(PROJECT_ROOT),
        # Nothing answers: the run fails fast, having imported everything a real one does.
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "CELERY_BROKER_URL": "redis://127.0.0.1:9/0",
        "DATABASE_URL": "postgresql://postgres@127.0.0.1:9/none",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9",
    }
    done = subprocess.run(
        [sys.executable, "-m", "clicktrail.workers.health"],
        env=env,
        capture_output=True,
        timeout=60,
    )
    # Only metric files made before the health module ran would be found: importing our
    # metrics with the variable set makes some (clicktrail.metrics defines unlabelled ones).
    subprocess.run([sys.executable, "-c", "import clicktrail.metrics"], env={**env,
                   "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}, check=True)  # fmt: skip

    assert done.returncode == 1, done.stderr.decode()[-2000:]
    assert b'"status": "unavailable"' in done.stdout
    assert list(metrics.iterdir()) == []
    assert list(tmp_path.glob("*.db")), "the control: importing the metrics makes files"


# --- shutdown ---------------------------------------------------------------------------------


def prestop_sleep(workload: dict[str, Any]) -> int:
    command = container(workload)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    return int(command[1])


def test_the_api_drains_before_the_server_stops_and_the_kubelet_waits_for_both() -> None:
    api = deployment("api")
    grace = api["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]

    assert prestop_sleep(api) >= 5
    assert grace > prestop_sleep(api) + GRACEFUL_SECONDS


def test_the_worker_has_time_to_finish_its_tasks_and_their_deliveries() -> None:
    worker = deployment("worker")
    settings = settings_of(worker)
    drain = int(settings.kafka.get("message.timeout.ms", 30000)) / 1000 + 5
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]

    assert celery_settings(settings)["task_acks_late"] is True
    assert grace > settings.task_time_limit_seconds + drain
    assert grace < settings.visibility_timeout_seconds


def test_one_beat_replaced_by_stopping_the_old_one_and_no_budget_for_it() -> None:
    beat = deployment("beat")
    labels = beat["spec"]["template"]["metadata"]["labels"]
    budgets = of_kind("PodDisruptionBudget")

    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert not any(b["spec"]["selector"]["matchLabels"].items() <= labels.items() for b in budgets)


def test_the_api_and_the_workers_have_disruption_budgets() -> None:
    budgets = {b["metadata"]["name"]: b for b in of_kind("PodDisruptionBudget")}

    assert set(budgets) == {"clicktrail-api", "clicktrail-worker"}
    for name, budget in budgets.items():
        target = find("Deployment", name)
        assert budget["spec"]["selector"] == target["spec"]["selector"], name
        assert budget["spec"]["maxUnavailable"] < target["spec"]["replicas"], name


def test_no_more_sinks_than_partitions() -> None:
    sink = deployment("sink")

    assert 1 <= sink["spec"]["replicas"] <= settings_of(sink).topic_partitions
    assert container(sink)["command"] == ["clicktrail", "sink"]


# --- resources --------------------------------------------------------------------------------


def test_every_container_has_requests_within_its_limits() -> None:
    for workload in workloads():
        resources = container(workload)["resources"]
        name = workload["metadata"]["name"]
        assert cores(resources["requests"]["cpu"]) <= cores(resources["limits"]["cpu"]), name
        assert megabytes(resources["requests"]["memory"]) <= megabytes(
            resources["limits"]["memory"]
        ), name


def test_the_workers_concurrency_is_their_cpu_request_with_memory_for_each_pool_process() -> None:
    spec = container(deployment("worker"))
    command = spec["command"]
    concurrency = int(command[command.index("--concurrency") + 1])

    assert concurrency == cores(spec["resources"]["requests"]["cpu"])
    # The main process (~125 MB) and each pool process (~150 MB), README: Performance.
    assert megabytes(spec["resources"]["requests"]["memory"]) >= 125 + 150 * concurrency


def test_the_api_has_memory_for_every_process() -> None:
    workers = settings_of(deployment("api")).api_workers
    spec = container(deployment("api"))

    # About 120 MB an API process (README: Performance), one core for the two of them.
    assert megabytes(spec["resources"]["requests"]["memory"]) >= 120 * workers
    assert cores(spec["resources"]["requests"]["cpu"]) * 2 >= workers


# --- autoscaling ------------------------------------------------------------------------------


def message_priority() -> int:
    message = orjson.loads(task_message("clicktrail.ingest", QUEUE, [{}], "", "test"))
    priority: int = message["properties"]["priority"]
    return priority


def list_of_the_queue() -> str:
    """The Redis list kombu pushes the API's messages onto: the queue's name for priority 0, a
    list of its own for each other step of priority."""
    from kombu.transport.redis import Channel

    channel = object.__new__(Channel)  # only the naming, no connection
    name: str = channel._q_for_pri(QUEUE, message_priority())
    return name


def test_keda_scales_the_workers_on_the_list_the_api_fills() -> None:
    keda = component_resources("keda")
    scaled = find("ScaledObject", "clicktrail-worker", keda)
    worker = deployment("worker")
    (redis,) = [t for t in scaled["spec"]["triggers"] if t["type"] == "redis"]

    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"] == {"name": worker["metadata"]["name"]}
    assert redis["metadata"]["listName"] == list_of_the_queue() == QUEUE
    assert "task_default_priority" not in celery_settings(Settings())
    assert int(redis["metadata"]["databaseIndex"]) == int(
        settings_of(worker).celery_broker_url.rsplit("/", 1)[1]
    )
    auth = find("TriggerAuthentication", redis["authenticationRef"]["name"], keda)
    for ref in auth["spec"]["secretTargetRef"]:
        secret = find("Secret", ref["name"], keda)
        assert ref["key"] in secret["stringData"], ref
        assert ref["parameter"] in {"address", "host", "port", "username", "password"}, ref


def scaling(name: str) -> tuple[int, int, int]:
    """Least and most workers, and queued messages per worker, of an autoscaling component."""
    if name == "keda":
        spec = find("ScaledObject", "clicktrail-worker", component_resources(name))["spec"]
        (redis,) = [t for t in spec["triggers"] if t["type"] == "redis"]
        return (
            spec["minReplicaCount"],
            spec["maxReplicaCount"],
            int(redis["metadata"]["listLength"]),
        )
    spec = find("HorizontalPodAutoscaler", "clicktrail-worker", component_resources(name))["spec"]
    (external,) = [m["external"] for m in spec["metrics"] if m["type"] == "External"]
    return spec["minReplicas"], spec["maxReplicas"], int(external["target"]["averageValue"])


@pytest.mark.parametrize("name", sorted(COMPONENTS))
def test_autoscaling_keeps_a_worker_and_reaches_its_most_before_the_api_refuses(name: str) -> None:
    least, most, per_worker = scaling(name)
    budget = find("PodDisruptionBudget", "clicktrail-worker")

    # A worker stays through a disruption, so that events keep flowing.
    assert least > budget["spec"]["maxUnavailable"]
    assert most > least
    # The API answers 503 past QUEUE_MAX_DEPTH queued messages: all workers run before then.
    assert per_worker * most < settings_of(deployment("api")).queue_max_depth
    # Both components scale alike.
    assert scaling(name) == scaling("keda")


def test_the_hpa_follows_the_gauge_the_workers_export() -> None:
    hpa = find("HorizontalPodAutoscaler", "clicktrail-worker", component_resources("hpa"))
    (external,) = [m["external"] for m in hpa["spec"]["metrics"] if m["type"] == "External"]
    exported = {family.name for family in PipelineGauges(lambda: 0, lambda: 0).collect()}

    assert external["metric"]["name"] in exported
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment("worker")["metadata"]["name"]


def test_the_cpu_targets_have_requests_to_be_measured_against() -> None:
    triggers = find("ScaledObject", "clicktrail-worker", component_resources("keda"))["spec"][
        "triggers"
    ]

    assert {t["type"] for t in triggers} == {"redis", "cpu"}
    assert "cpu" in container(deployment("worker"))["resources"]["requests"]

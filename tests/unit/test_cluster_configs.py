"""The cluster configs in cluster-configs/, checked offline: the launcher YAMLs against the JSON
schema Ray ships and through the checks `ray up` makes before it calls a cloud, the KubeRay
RayService against what the operator and tilemore_deployments/serve.yaml expect, and every setting
against Tilemore's own Settings."""

from __future__ import annotations

import ast
import copy
import importlib.metadata
import importlib.util
import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import click
import jsonschema
import pytest
import yaml

from tilemore.catalog import Catalog
from tilemore.engine.autoscale import autoscaling_for
from tilemore.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).parents[2]
CONFIGS = ROOT / "cluster-configs"
CLOUDS = ["aws", "gcp", "azure"]
LAUNCHERS = [*CLOUDS, "onprem"]
COMMAND_LISTS = ("setup_commands", "head_start_ray_commands", "worker_start_ray_commands")
RAY_VERSION = importlib.metadata.version("ray")


def launcher(name: str) -> dict:
    return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())


@pytest.fixture(scope="module")
def schema() -> dict:
    # The schema `ray up` validates with, from the installed ray (found without importing it).
    path = Path(importlib.util.find_spec("ray").origin).parent / "autoscaler" / "ray-schema.json"
    return json.loads(path.read_text())


def schema_errors(config: dict, schema: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(config)]


def ray_up_checks(config: dict) -> dict:
    """What `ray up` does with a config before it contacts the cloud: merge the provider's
    defaults, then validate (schema, head type, min/max workers, Docker settings)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def docker_env(config: dict) -> dict[str, str]:
    """The ``--env K=V`` settings a launcher config gives every container."""
    options = config["docker"].get("run_options", [])
    return dict(o.split(" ", 1)[1].split("=", 1) for o in options if o.startswith("--env "))


def env_example() -> dict[str, str]:
    lines = (CONFIGS / "tilemore.env.example").read_text().splitlines()
    pairs = (line.split("=", 1) for line in lines if line and not line.startswith("#"))
    return {k: v.strip("'\"") for k, v in pairs}


def is_spot(cloud: str, node_config: dict) -> bool:
    if cloud == "aws":
        return node_config.get("InstanceMarketOptions", {}).get("MarketType") == "spot"
    if cloud == "gcp":
        return node_config.get("scheduling", {}).get("provisioningModel") == "SPOT"
    return node_config["azure_arm_parameters"].get("priority") == "Spot"


def has_gpu_hardware(cloud: str, node_config: dict) -> bool:
    if cloud == "aws":
        return node_config["InstanceType"].startswith(("g4", "g5", "g6", "p3", "p4", "p5"))
    if cloud == "gcp":
        return sum(a["acceleratorCount"] for a in node_config.get("guestAccelerators", [])) > 0
    return node_config["azure_arm_parameters"]["vmSize"].startswith(("Standard_NC", "Standard_ND"))


# -- the launcher YAMLs --------------------------------------------------------------------------


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_config_matches_rays_schema(name, schema):
    assert schema_errors(launcher(name), schema) == []


@pytest.mark.parametrize("name", LAUNCHERS)
def test_ray_up_accepts_the_config(name):
    prepared = ray_up_checks(launcher(name))
    assert prepared["head_node_type"] in prepared["available_node_types"]


def _rename(mapping: dict, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


def _market_options_outside_node_config(config: dict) -> None:
    spot = config["available_node_types"]["cpu-spot"]
    spot["InstanceMarketOptions"] = spot["node_config"].pop("InstanceMarketOptions")


BROKEN = {
    "misspelled required key": lambda c: _rename(c, "cluster_name", "cluster_nmae"),
    "misspelled node-type key": lambda c: _rename(
        c["available_node_types"]["cpu-spot"], "min_workers", "min_worker"),
    # Cloud-specific keys are free inside node_config and provider, nowhere else.
    "cloud key outside node_config": _market_options_outside_node_config,
    "fractional resource": lambda c: c["available_node_types"]["gpu-spot"]["resources"].update(
        CPU=3.5),
    "misspelled docker option": lambda c: _rename(c["docker"], "run_options", "runoptions"),
}


@pytest.mark.parametrize("mistake", BROKEN)
def test_schema_rejects_a_broken_copy(mistake, schema):
    config = launcher("aws")
    assert schema_errors(config, schema) == []
    BROKEN[mistake](config)
    assert schema_errors(config, schema), f"{mistake} went through"
    with pytest.raises(jsonschema.ValidationError):
        ray_up_checks(config)


def test_ray_up_rejects_what_the_schema_cannot_see():
    config = launcher("aws")
    config["head_node_type"] = "heed"
    with pytest.raises(ValueError, match="head_node_type"):
        ray_up_checks(config)
    onprem = launcher("onprem")
    onprem["available_node_types"] = launcher("aws")["available_node_types"]
    with pytest.raises(click.ClickException):  # the local provider takes no node types
        ray_up_checks(onprem)


@pytest.mark.parametrize("cloud", CLOUDS)
def test_cloud_node_types(cloud):
    config = launcher(cloud)
    types = config["available_node_types"]
    head = types.pop(config["head_node_type"])
    # The head is on-demand and hands out no CPUs; it is never counted as spot capacity.
    assert not is_spot(cloud, head["node_config"])
    assert head["resources"] == {"CPU": 0}
    assert {"cpu-spot", "gpu-spot"} <= set(types)
    for name, worker in types.items():
        assert is_spot(cloud, worker["node_config"]), name
        assert {"CPU", "memory"} <= set(worker["resources"]), name
        assert worker["resources"]["spot"] == 1, name
        assert 0 <= worker["min_workers"] <= worker["max_workers"], name
    assert sum(w["max_workers"] for w in types.values()) <= config["max_workers"]
    # A GPU type with GPU hardware, up from the start (the conductor picks the CNN's CPU
    # fallback when it finds no GPU in the cluster), on the GPU image.
    gpu = types["gpu-spot"]
    assert gpu["resources"]["GPU"] >= 1 and gpu["min_workers"] >= 1
    assert has_gpu_hardware(cloud, gpu["node_config"])
    assert gpu["docker"]["worker_image"].endswith("-gpu")
    assert not has_gpu_hardware(cloud, types["cpu-spot"]["node_config"])
    assert "GPU" not in types["cpu-spot"]["resources"]
    if cloud == "gcp":  # GPU VMs cannot live-migrate; a top-level acceleratorType is a TPU
        assert gpu["node_config"]["scheduling"]["onHostMaintenance"] == "TERMINATE"
        assert "acceleratorType" not in gpu["node_config"]
    if cloud == "azure":
        assert gpu["node_config"]["azure_arm_parameters"]["evictionPolicy"] == "Delete"


@pytest.mark.parametrize("name", LAUNCHERS)
def test_head_starts_with_gcs_fault_tolerance_and_deploys(name):
    config = launcher(name)
    head = " ".join(config["head_start_ray_commands"])
    assert "ray start --head" in head
    assert "RAY_REDIS_ADDRESS=$REDIS_ADDRESS" in head
    assert '--redis-password="$REDIS_PASSWORD"' in head
    # The namespace is the cluster's own: its new head finds its tables, no other cluster's.
    assert f"RAY_external_storage_namespace={config['cluster_name']}" in head
    assert "serve deploy" in head and '"tilemore_deployments") / "serve.yaml"' in head
    # Workers outwait a restarting GCS (Ray's default is 60 s, the head's own timeout).
    workers = " ".join(config["worker_start_ray_commands"])
    wait = re.search(r"RAY_gcs_rpc_server_reconnect_timeout_s=(\d+)", workers)
    assert wait and int(wait.group(1)) > 60


@pytest.mark.parametrize("name", LAUNCHERS)
def test_every_node_installs_tilemore_and_reads_its_settings(name):
    config = launcher(name)
    assert config["file_mounts"] == {"~/tilemore-env": "cluster-configs/env"}
    assert "env/" in (CONFIGS / ".gitignore").read_text().split()  # secrets stay out of git
    setup = config["setup_commands"]
    assert any(". ~/tilemore-env/tilemore.env" in c and "~/.bashrc" in c for c in setup)
    assert any(c.startswith("pip install ~/tilemore-env/tilemore-") for c in setup)
    # Same Ray and Python as the project pins, everywhere.
    images = [config["docker"]["image"]] + [
        t["docker"]["worker_image"] for t in config.get("available_node_types", {}).values()
        if "docker" in t]
    for image in images:
        assert image.startswith(f"rayproject/ray:{RAY_VERSION}-py311"), image


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
@pytest.mark.parametrize("name", LAUNCHERS)
def test_commands_are_valid_shell(name):
    config = launcher(name)
    for command in (c for key in COMMAND_LISTS for c in config[key]):
        result = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
        assert result.returncode == 0, f"{command}\n{result.stderr}"


@pytest.mark.parametrize("name", LAUNCHERS)
def test_settings_are_tilemores(name):
    config = launcher(name)
    fixed = docker_env(config)
    cloud = name if name in CLOUDS else None
    assert fixed.get("TILEMORE_PREEMPTION_PROVIDER") == cloud
    assert fixed["TILEMORE_BLOB_STORE"] == "s3"
    settings = Settings.from_env({**env_example(), **fixed})
    assert settings.preemption_provider == cloud
    assert settings.blob_store == "s3" and settings.s3_bucket
    assert settings.database_url.startswith("postgresql://")


def test_every_tilemore_variable_named_is_a_setting():
    known = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    for path in sorted(p for p in CONFIGS.iterdir() if p.is_file()):
        named = set(re.findall(r"\bTILEMORE_[A-Z0-9_]+", path.read_text()))
        assert named <= known, f"{path.name}: {sorted(named - known)}"


def test_a_built_wheel_holds_what_the_nodes_run():
    """The configs pip-install a wheel: every subpackage and data file must be in it."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package, folder in tool["package-dir"].items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            name = ".".join((package, *init.parent.relative_to(base).parts))
            assert name in tool["packages"], f"{name} is missing from the wheel"
        patterns = tool["package-data"].get(package, [])
        shipped = {p for pattern in patterns for p in base.glob(pattern)}
        data = {p for p in base.rglob("*") if p.suffix in (".yaml", ".yml", ".pt", ".json")}
        assert data <= shipped, f"{sorted(map(str, data - shipped))} missing from the wheel"


# -- the KubeRay RayService ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def manifest() -> dict[str, dict]:
    docs = yaml.safe_load_all((CONFIGS / "kuberay-rayservice.yaml").read_text())
    return {doc["kind"]: doc for doc in docs}


def containers(group: dict) -> list[dict]:
    return group["template"]["spec"]["containers"]


def test_rayservice_kind(manifest):
    service = manifest["RayService"]
    assert service["apiVersion"] == "ray.io/v1"
    assert service["metadata"]["name"]
    assert service["spec"]["rayClusterConfig"]["rayVersion"] == RAY_VERSION


def test_serve_config_is_deployments_serve_yaml(manifest):
    serve = yaml.safe_load(manifest["RayService"]["spec"]["serveConfigV2"])
    expected = yaml.safe_load((ROOT / "tilemore_deployments" / "serve.yaml").read_text())
    assert serve == expected
    # And the import path names a builder that exists.
    module, attr = serve["applications"][0]["import_path"].split(":")
    assert module == "tilemore_deployments.ingress"
    tree = ast.parse((ROOT / "tilemore_deployments" / "ingress.py").read_text())
    assert attr in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_head_and_worker_groups(manifest):
    cluster = manifest["RayService"]["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert "resources" not in head["rayStartParams"]  # the head is not spot capacity
    groups = {g["groupName"]: g for g in cluster["workerGroupSpecs"]}
    assert {"cpu-spot", "gpu-spot"} <= set(groups)
    for group in [head, *groups.values()]:
        for container in containers(group):
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), container["name"]
    for name, group in groups.items():
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        # KubeRay's custom-resource format: a JSON object in a quoted string, quotes escaped.
        quoted = group["rayStartParams"]["resources"]
        assert json.loads(quoted.strip('"').replace('\\"', '"')) == {"spot": 1}, name
    gpu = containers(groups["gpu-spot"])[0]["resources"]
    assert int(gpu["requests"]["nvidia.com/gpu"]) >= 1
    assert int(gpu["limits"]["nvidia.com/gpu"]) >= 1
    assert groups["gpu-spot"]["minReplicas"] >= 1
    for kind in ("requests", "limits"):
        assert "nvidia.com/gpu" not in containers(groups["cpu-spot"])[0]["resources"][kind]


def test_gcs_fault_tolerance(manifest):
    options = manifest["RayService"]["spec"]["rayClusterConfig"]["gcsFaultToleranceOptions"]
    assert re.fullmatch(r"[\w.-]+:\d+", options["redisAddress"])
    secret = options["redisPassword"]["valueFrom"]["secretKeyRef"]
    assert secret["name"] and secret["key"]
    # KubeRay's default (the RayCluster's UID) keeps an upgrade's new cluster apart.
    assert "externalStorageNamespace" not in options


def test_pods_get_tilemores_settings(manifest):
    cluster = manifest["RayService"]["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        for container in containers(group):
            sources = container["envFrom"]
            assert {"configMapRef": {"name": "tilemore-settings"}} in sources
            assert {"secretRef": {"name": "tilemore-database"}} in sources
    data = manifest["ConfigMap"]["data"]
    assert manifest["ConfigMap"]["metadata"]["name"] == "tilemore-settings"
    # TILEMORE_DATABASE_URL comes from the secret tilemore-database.
    settings = Settings.from_env({**data, "TILEMORE_DATABASE_URL": "postgresql://db/tilemore"})
    assert settings.blob_store == "s3" and settings.s3_bucket
    assert settings.preemption_provider == "aws"


# -- autoscaling, on by default on a cluster -------------------------------------------------------

AUTOSCALING = "TILEMORE_OPERATOR_AUTOSCALING"


def serve_env() -> dict[str, str]:
    serve = yaml.safe_load((ROOT / "tilemore_deployments" / "serve.yaml").read_text())
    return serve["applications"][0]["runtime_env"]["env_vars"]


def test_operator_autoscaling_is_the_same_everywhere(manifest):
    """The env file (ray up), the ConfigMap (KubeRay) and the Serve application's runtime_env
    (both; the RayService embeds serve.yaml, compared above) carry one value, as JSON that
    Settings accepts."""
    values = {"tilemore.env.example": env_example()[AUTOSCALING],
              "ConfigMap": manifest["ConfigMap"]["data"][AUTOSCALING],
              "serve.yaml": serve_env()[AUTOSCALING]}
    parsed = {where: json.loads(value) for where, value in values.items()}
    assert len({json.dumps(p, sort_keys=True) for p in parsed.values()}) == 1, parsed
    settings = Settings.from_env({AUTOSCALING: values["serve.yaml"]})
    assert settings.operator_autoscaling["*"].max_replicas > 1
    # Every setting in serve.yaml's runtime_env is Tilemore's (env_vars are strings).
    known = {ENV_PREFIX + field.upper() for field in Settings.model_fields}
    assert all(isinstance(v, str) for v in serve_env().values())
    assert set(serve_env()) <= known


def test_every_shipped_operator_autoscales_on_a_cluster():
    settings = Settings.from_env({AUTOSCALING: env_example()[AUTOSCALING]})
    for op in set(Catalog.load().operators_in_use()):
        auto = autoscaling_for(op, settings)
        assert auto is not None and auto.min_replicas >= 1 and auto.max_replicas > 1, op.name
        # Quiet for minutes before a pool shrinks: a node is returned only after that.
        assert auto.downscale_delay_s >= 60, op.name


def test_the_ingress_is_sized_in_one_place(manifest):
    """serve.yaml's autoscaling_config wins over TILEMORE_INGRESS_*: setting those too would
    only mislead."""
    for where, env in [("tilemore.env.example", env_example()),
                       ("ConfigMap", manifest["ConfigMap"]["data"]), ("serve.yaml", serve_env())]:
        assert not [k for k in env if k.startswith("TILEMORE_INGRESS_")], where
    ingress = yaml.safe_load((ROOT / "tilemore_deployments" / "serve.yaml").read_text())
    auto = ingress["applications"][0]["deployments"][0]["autoscaling_config"]
    assert 2 <= auto["min_replicas"] < auto["max_replicas"]


def _worker_types(name: str, manifest: dict) -> dict[str, tuple[int, float, float]]:
    """Worker type → (most nodes, CPUs per node, GPUs per node)."""
    if name == "kuberay":
        groups = manifest["RayService"]["spec"]["rayClusterConfig"]["workerGroupSpecs"]
        return {g["groupName"]: (g["maxReplicas"],
                                 float(containers(g)[0]["resources"]["limits"]["cpu"]),
                                 float(containers(g)[0]["resources"]["limits"].get(
                                     "nvidia.com/gpu", 0)))
                for g in groups}
    types = launcher(name)["available_node_types"]
    return {t: (v["max_workers"], v["resources"]["CPU"], v["resources"].get("GPU", 0))
            for t, v in types.items() if t != launcher(name)["head_node_type"]}


@pytest.mark.parametrize("name", [*CLOUDS, "kuberay"])
def test_every_pool_at_its_max_fits_the_worker_types(name, manifest):
    """Replicas the worker types can never hold would wait for ever: every pool at its
    max_replicas (the GPU operators on the GPU type, the rest and the ingress on the CPU
    type) fits within the types' max_workers."""
    settings = Settings.from_env({AUTOSCALING: env_example()[AUTOSCALING]})
    types = _worker_types(name, manifest)
    gpus = cpus = 0.0
    for op in set(Catalog.load().operators_in_use()):
        most = autoscaling_for(op, settings).max_replicas
        if op.resources.num_gpus:
            gpus += most * op.resources.num_gpus
        else:
            cpus += most * op.resources.num_cpus
    serve = yaml.safe_load((ROOT / "tilemore_deployments" / "serve.yaml").read_text())
    ingress = serve["applications"][0]["deployments"][0]["autoscaling_config"]["max_replicas"]
    cpus += ingress * 0.25  # tilemore_deployments/ingress.py: ray_actor_options num_cpus
    n, cpu, gpu = types["gpu-spot"]
    assert 0 < gpus <= n * gpu, (gpus, n * gpu)
    n, cpu, _ = types["cpu-spot"]
    assert cpus <= n * cpu, (cpus, n * cpu)

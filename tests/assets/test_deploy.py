"""Many GPUs: the Kubernetes code location and Helm values in deploy/, and the per-process device lease
that pins each step to its own GPU on one machine."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dagster._core.execution.api import create_execution_plan
from dagster._core.workspace.autodiscovery import loadable_targets_from_python_module
from dagster_k8s import k8s_job_executor
from dagster_k8s.container_context import K8sContainerContext
from dagster_k8s.job import DagsterK8sJobConfig, construct_dagster_k8s_job, get_user_defined_k8s_config

from forecast_core.device import DeviceBusyError, claim_device, lease_device
from hpo_assets.dbt_project import PREPARE_MANIFEST
from hpo_assets.instance import ACCELERATOR_POOL, METRICS_POOL
from resources import runtimes
from tests.support import REPO

DEPLOY = REPO / "deploy"
GPU = "nvidia.com/gpu"
MODEL_STEPS = {"toto_sweep", "kronos_sweep", "selected_configs"}  # every step that runs a model
CPU_STEPS = {"price_history", "baseline_sweep", "dbt_metrics"}


@pytest.fixture(scope="module")
def k8s_defs():
    from deploy.k8s_definitions import defs

    return defs


@pytest.fixture(scope="module")
def values() -> dict:
    return yaml.safe_load((DEPLOY / "values.yaml").read_text())


@pytest.fixture(scope="module")
def user_deployment(values) -> dict:
    [deployment] = values["dagster-user-deployments"]["deployments"]
    return deployment


def _steps(defs) -> dict:
    """Execution steps of the job that covers every asset, keyed by step key (what the executor launches)."""
    plan = create_execution_plan(defs.resolve_implicit_global_asset_job_def())
    return {step.key: step for step in plan.steps}


def test_every_job_runs_each_step_in_its_own_pod(k8s_defs):
    from hpo_assets.definitions import defs as local_defs

    # What `dagster api grpc -m deploy.k8s_definitions` finds: exactly one Definitions, this one.
    [target] = loadable_targets_from_python_module("deploy.k8s_definitions", working_directory=str(REPO))
    assert target.target_definition is k8s_defs
    assert k8s_defs.executor is k8s_job_executor
    jobs = {job.name: job for job in k8s_defs.resolve_all_job_defs()}
    assert {"__ASSET_JOB", "tune_symbol", "refresh_prices", "build_metrics", "select_configs"} <= set(jobs)
    for name, job in jobs.items():
        assert job.executor_def is k8s_job_executor, f"job {name} runs with {job.executor_def.name}"
    # Same graph, schedules and sensors as the local location, whose executor stays multiprocess.
    assert set(k8s_defs.resolve_all_asset_keys()) == set(local_defs.resolve_all_asset_keys())
    assert {s.name for s in k8s_defs.schedules} == {s.name for s in local_defs.schedules}
    assert {s.name for s in k8s_defs.sensors} == {s.name for s in local_defs.sensors}
    assert local_defs.executor.name == "multiprocess"


def test_accelerator_steps_get_one_gpu_and_no_other_step_gets_any(k8s_defs, user_deployment):
    steps = _steps(k8s_defs)
    accelerator = {key for key, step in steps.items() if step.pool == ACCELERATOR_POOL}
    assert accelerator >= MODEL_STEPS and not accelerator & CPU_STEPS, accelerator
    assert CPU_STEPS <= set(steps) and steps["dbt_metrics"].pool == METRICS_POOL
    graph = k8s_defs.resolve_asset_graph()
    pooled_assets = {key.to_user_string() for key in graph.get_all_asset_keys()
                     if ACCELERATOR_POOL in (graph.get(key).pools or set())}
    assert pooled_assets == accelerator  # one asset per step: the pool seen by the executor is the assets' pool

    # The pod the step handler would submit: the user deployment's container context (what the chart
    # passes with includeConfigInLaunchedRuns) merged with the step's dagster-k8s/config tag.
    deployment_context = K8sContainerContext(volumes=user_deployment["volumes"],
                                             volume_mounts=user_deployment["volumeMounts"], namespace="hpo")
    image = f"{user_deployment['image']['repository']}:{user_deployment['image']['tag']}"
    for key, step in steps.items():
        step_config = get_user_defined_k8s_config(step.tags)  # dagster-k8s's own parser, as K8sStepHandler
        context = deployment_context.merge(K8sContainerContext(run_k8s_config=step_config))
        job = construct_dagster_k8s_job(DagsterK8sJobConfig(job_image=image, dagster_home="/opt/dagster/dagster_home"),
                                        args=["dagster", "api", "execute_step"], job_name=f"dagster-step-{key}",
                                        user_defined_k8s_config=context.run_k8s_config, component="step_worker")
        pod = job.spec.template.spec
        [container] = pod.containers
        limits = (container.resources.limits or {}) if container.resources else {}
        requests = (container.resources.requests or {}) if container.resources else {}
        assert [m.mount_path for m in container.volume_mounts] == ["/data"], key
        assert [v.persistent_volume_claim.claim_name for v in pod.volumes] == ["hpo-data"], key
        if key in accelerator:
            assert step_config.container_config["resources"]["limits"][GPU] == 1, key
            assert limits.get(GPU) == requests.get(GPU) == "1", (key, container.resources)  # k8s quantity
            assert any(t.key == GPU for t in pod.tolerations or []), key
        else:
            assert GPU not in json.dumps(step_config.to_dict()), (key, step_config)
            assert GPU not in limits and GPU not in requests, (key, container.resources)


def test_helm_values_match_the_image_module_and_pools(k8s_defs, values, user_deployment):
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    readme = (DEPLOY / "README.md").read_text()
    [workdir] = re.findall(r"^WORKDIR\s+(\S+)", dockerfile, flags=re.M)
    assert 'pip install -e ".[deploy]"' in dockerfile  # dagster-k8s and dagster-postgres in the image
    # the image makes the dbt manifest with the step `make` runs (pods never run dbt parse)
    assert PREPARE_MANIFEST in dockerfile and PREPARE_MANIFEST in (REPO / "Makefile").read_text()

    args = user_deployment["dagsterApiGrpcArgs"]
    module = args[args.index("-m") + 1]
    assert module == "deploy.k8s_definitions" and args[args.index("-d") + 1] == workdir
    assert user_deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    image = user_deployment["image"]
    assert f"{image['repository']}:{image['tag']}" in readme  # the README builds and pushes this image

    env = user_deployment["env"]
    [mount] = user_deployment["volumeMounts"]
    for name in ("HPO_STORAGE_DIR", "HPO_HYPERPARAMS_DIR", "HF_HOME"):  # every pod sees the same files
        assert env[name].startswith(mount["mountPath"] + "/"), (name, env[name])
    [volume] = user_deployment["volumes"]
    pvc = yaml.safe_load((DEPLOY / "pvc.yaml").read_text())
    assert volume["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]

    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    pools = values["concurrency"]["pools"]
    assert values["concurrency"]["enabled"] is True and pools["granularity"] == "op"
    assert pools["defaultLimit"] == 1  # metrics_duckdb: one DuckDB writer without further setup
    # The accelerator limit (GPU budget) is set with the CLI, in the README and in the values' header.
    command = f"dagster instance concurrency set {ACCELERATOR_POOL}"
    assert command in readme and command in (DEPLOY / "values.yaml").read_text()


# --- one machine, several devices: each step process leases its own ---------------------------------

HOLDER = """
import sys
from forecast_core.device import DeviceBusyError, claim_device
try:
    device = claim_device("auto", device_count=3, prefix="fake", lock_dir=sys.argv[1])
except DeviceBusyError as exc:
    print("BUSY", exc, flush=True)
    sys.exit(3)
print(device, flush=True)
sys.stdin.read()  # hold the lease until the test closes stdin (or kills this process)
"""


def _start_holder(lock_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER, str(lock_dir)], cwd=REPO, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_step_processes_lease_distinct_devices_and_a_killed_holder_frees_its_own(tmp_path, monkeypatch):
    holders = [_start_holder(tmp_path) for _ in range(3)]
    try:
        devices = [p.stdout.readline().strip() for p in holders]
        assert sorted(devices) == ["fake:0", "fake:1", "fake:2"], devices

        fourth = _start_holder(tmp_path)
        out, err = fourth.communicate(timeout=60)
        assert fourth.returncode == 3, (out, err)
        assert "all 3 fake devices are leased" in out and "Run at most 3 model processes at once" in out
        assert all(f"pid {p.pid}" in out for p in holders), out  # the error names who holds what
        # A model resource adds the Dagster way (the pool limit) to the core's error.
        monkeypatch.setattr(runtimes, "claim_device", lambda device: claim_device(
            device, device_count=3, prefix="fake", lock_dir=str(tmp_path)))
        with pytest.raises(DeviceBusyError) as info:
            runtimes._claim("auto")
        assert "Run at most 3 model processes at once" in str(info.value)
        assert f"dagster instance concurrency set {ACCELERATOR_POOL} N" in str(info.value)

        victim = holders[devices.index("fake:1")]
        victim.send_signal(signal.SIGKILL)  # no clean-up code runs: the kernel drops the flock
        victim.wait(timeout=30)
        fifth = _start_holder(tmp_path)
        holders.append(fifth)
        assert fifth.stdout.readline().strip() == "fake:1"
    finally:
        for proc in holders:
            if proc.poll() is None:
                proc.stdin.close()
                proc.wait(timeout=30)
            proc.stdout.close()
            proc.stderr.close()


def test_lease_is_per_process_and_released_explicitly(tmp_path):
    lease = lease_device(2, prefix="fake", lock_dir=tmp_path)
    try:
        # Both model resources of one process share its device instead of taking a second one.
        assert claim_device("auto", device_count=2, prefix="fake", lock_dir=tmp_path) == lease.device == "fake:0"
        assert (tmp_path / "fake-0.lock").read_text().strip() == str(os.getpid())
    finally:
        lease.release()
    assert lease_device(2, prefix="fake", lock_dir=tmp_path).device == "fake:0"  # free again
    lease_device(2, prefix="fake", lock_dir=tmp_path).release()


def test_no_lease_for_one_device_none_or_an_explicit_choice(tmp_path):
    assert claim_device("auto", device_count=1, prefix="fake", lock_dir=tmp_path) == "fake"
    assert claim_device("auto", device_count=0, prefix="fake", lock_dir=tmp_path) == "cpu"
    assert claim_device("cpu", device_count=4, prefix="fake", lock_dir=tmp_path) == "cpu"
    assert not list(tmp_path.iterdir())  # nothing was locked
    with pytest.raises(ValueError, match="device count 0"):
        lease_device(0, lock_dir=tmp_path)
    assert issubclass(DeviceBusyError, RuntimeError)


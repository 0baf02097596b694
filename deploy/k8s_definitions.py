"""The code location for Kubernetes: the same Definitions as hpo_assets.definitions, but every step of
every run is its own pod (dagster_k8s.k8s_job_executor), so a step in the ``accelerator`` pool gets the
GPU its ``dagster-k8s/config`` op tag requests (hpo_assets.instance.ACCELERATOR_OP_TAGS) and nothing else does.

Load it with ``dagster api grpc -m deploy.k8s_definitions -d /opt/hpo`` (deploy/values.yaml does).
"""

from dagster import Definitions
from dagster_k8s import k8s_job_executor

# The module, not its `defs`: a code location module may hold only one Definitions at module scope.
from hpo_assets import definitions as local_location


def with_executor(defs: Definitions, executor) -> Definitions:
    """``defs`` with another default executor; jobs that name no executor of their own take it."""
    return Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=defs.jobs,
        schedules=defs.schedules,
        sensors=defs.sensors,
        resources=defs.resources,
        loggers=defs.loggers,
        metadata=defs.metadata,
        executor=executor,
    )


# Namespace, image, env and volumes come from the K8sRunLauncher and the user deployment (Helm values):
# the executor inherits them, so it needs no config of its own here.
defs = with_executor(local_location.defs, k8s_job_executor)

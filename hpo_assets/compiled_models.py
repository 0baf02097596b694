"""Model assets: each engine's compile cache, measured against eager and checked before use.

Optional: the sweeps run eager when no cache was built, so "never materialised" only means nothing
was compiled yet. The sweeps list these assets as dependencies because, with ``compile="auto"``, they
warm-start from the cache these assets measured (a new cache marks their results stale in the UI).
The work is in forecast_core/compiled/; these assets only run it through the model resources (so
the key is built from exactly the resource configuration the sweeps use) and report it. The core
names no asset: the resources add "materialise the <kind>_model asset" where no cache is usable.
"""

import math

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)

from resources.runtimes import KronosRuntime, TotoRuntime

from .instance import ACCELERATOR_OP_TAGS, ACCELERATOR_POOL

PARITY_CHECK = "compiled_matches_eager"
PARITY_DESCRIPTION = ("Compiled and eager forecasts of the fixed-seed probe batch agree within the resource's "
                      "parity_tolerance. On failure the manifest records the eager decision, so the resources run "
                      "eager, and downstream steps are blocked.")


def _value(value):
    """Dagster metadata for a plain value (non-finite floats as text, so they stay JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _materialize(context: AssetExecutionContext, runtime, asset_name: str) -> MaterializeResult:
    outcome = runtime.build_compiled()
    (context.log.info if outcome.compiled or outcome.parity_passed is not False else context.log.warning)(
        f"{asset_name}: {outcome.reason}")
    metadata = {k: _value(v) for k, v in outcome.metadata().items() if v is not None}
    if outcome.directory is not None:
        metadata["cache_dir"] = MetadataValue.path(str(outcome.directory))
    if outcome.manifest:
        shown = {k: v for k, v in outcome.manifest.items() if k != "files"}
        shown["files"] = f"{len(outcome.manifest['files'])} files"
        metadata["manifest"] = MetadataValue.json(shown)
    passed = outcome.parity_passed is not False  # nothing compiled (off, compile failed): eager, nothing to compare
    check = AssetCheckResult(
        check_name=PARITY_CHECK, passed=passed, severity=AssetCheckSeverity.ERROR,
        description=(f"parity error {outcome.parity_error:.3g} vs tolerance {outcome.parity_tolerance:.3g}; "
                     f"{outcome.reason}") if outcome.parity_error is not None else outcome.reason,
        metadata={k: metadata[k] for k in ("parity_error", "parity_tolerance", "compiled", "reason") if k in metadata},
    )
    version = outcome.key.digest if outcome.key is not None else "eager"
    return MaterializeResult(metadata=metadata, check_results=[check], data_version=DataVersion(version))


@asset(group_name="models", pool=ACCELERATOR_POOL, op_tags=ACCELERATOR_OP_TAGS, kinds={"pytorch"},
       check_specs=[AssetCheckSpec(PARITY_CHECK, asset="toto_model", blocking=True, description=PARITY_DESCRIPTION)])
def toto_model(context: AssetExecutionContext, toto: TotoRuntime) -> MaterializeResult:
    """Optional: Toto's compile cache (materialise on a GPU to warm it; sweeps run eager without).

    Under compiled_models/toto/: built (or re-verified), timed eager vs compiled on the probe batch,
    and used by toto_sweep only where its manifest records a speed-up and parity with eager.
    """
    return _materialize(context, toto, "toto_model")


@asset(group_name="models", pool=ACCELERATOR_POOL, op_tags=ACCELERATOR_OP_TAGS, kinds={"pytorch"},
       check_specs=[AssetCheckSpec(PARITY_CHECK, asset="kronos_model", blocking=True,
                                   description=PARITY_DESCRIPTION)])
def kronos_model(context: AssetExecutionContext, kronos: KronosRuntime) -> MaterializeResult:
    """Optional: Kronos's compile cache (materialise on a GPU to warm it; sweeps run eager without).

    Under compiled_models/kronos/ (model + tokenizer weights in the key): built (or re-verified),
    timed eager vs compiled, and used by kronos_sweep only where its manifest records a speed-up and
    parity with eager.
    """
    return _materialize(context, kronos, "kronos_model")

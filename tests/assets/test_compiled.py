"""Compiled model caches: keys and manifests, rebuilds after mismatch or corruption, the blocking
parity check, and a real ``toto_model`` materialization (one cold torch.compile for the whole file).

Speed on a shared 2-core machine is noise, so the compiled runs use ``min_speedup=0`` (keep the
compiled model whenever it matches eager); the speed rule itself is tested on its own.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from dagster import AssetCheckKey, AssetKey, DagsterInstance, materialize

from forecast_core.compiled import policy
from forecast_core.compiled.cache import (
    ENV_DIR, INDUCTOR, MANIFEST, CacheKey, CacheMissing, file_table, read_manifest, write_manifest,
)
from forecast_core.compiled.parity import ProbeShape
from forecast_core.compiled.policy import CompileSettings, decide, manifest_for
from forecast_core.compiled.wrappers import compile_in_place, is_compiled, make_eager
from forecast_core.toto import DEFAULT_TINY_DIR, TotoModel, load_toto
from hpo_assets.compiled_models import PARITY_CHECK, toto_model
from resources.runtimes import KronosRuntime, TotoRuntime

# The smallest Toto probe: one window of one 64-bar patch, horizon one patch, 16 samples.
SMALL = dict(probe_windows=1, probe_context=64, probe_horizon=64, probe_samples=16)


def toto_runtime(root, **overrides) -> TotoRuntime:
    config = dict(source=str(DEFAULT_TINY_DIR), device="cpu", compiled_dir=str(root), min_speedup=0.0, **SMALL)
    runtime = TotoRuntime(**{**config, **overrides})
    return runtime


def copy_root(built, tmp_path):
    root = tmp_path / "compiled"
    shutil.copytree(built["root"], root)
    return root, built["key"].directory(root)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Materialize ``toto_model`` through Dagster on the bundled tiny checkpoint, over a cache
    directory whose manifest is garbage (as a killed editor or disk error would leave it)."""
    base = tmp_path_factory.mktemp("compiled")
    home = base / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("")
    root = base / "compiled_models"
    key = toto_runtime(root).compile_key()
    key.directory(root).mkdir(parents=True)
    (key.directory(root) / MANIFEST).write_text('{"format": 1, "key": {"kind": "to')
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(home))
        instance = DagsterInstance.get()
        result = materialize([toto_model], instance=instance, resources={"toto": toto_runtime(root)})
    return {"root": root, "key": key, "result": result, "home": home}


def test_key_digest_and_manifest_round_trip(tmp_path):
    shape = ProbeShape(1, 64, 64, 16)
    key = CacheKey.current("toto", "Datadog/Toto-Open-Base-1.0", "abc123", "cpu", "float32", "default", shape)
    assert key.digest == CacheKey(**key.to_dict()).digest  # stable across processes (sorted JSON)
    assert key.directory(tmp_path).parts[-3:] == ("toto", "Datadog--Toto-Open-Base-1.0", key.digest)
    for change in (dict(revision="def456"), dict(torch_version="2.0.0"), dict(dtype="bfloat16"), dict(device="cuda:0"),
                   dict(compile_mode="max-autotune"), dict(shapes={**key.shapes, "samples": 32}), dict(code="sha256:0")):
        assert CacheKey(**{**key.to_dict(), **change}).digest != key.digest, change

    directory = key.directory(tmp_path)
    (directory / INDUCTOR / "ab").mkdir(parents=True)
    (directory / INDUCTOR / "ab" / "kernel.so").write_bytes(b"\x7fELF" + bytes(range(200)))
    measured = {"eager_seconds": 0.02, "compiled_seconds": 0.01, "speedup": 2.0}
    settings = CompileSettings("auto", tmp_path, parity_tolerance=1e-3, min_speedup=1.1)
    manifest = manifest_for(key, measured, 1e-7, settings, file_table(directory / INDUCTOR))
    write_manifest(directory, manifest)
    assert read_manifest(directory, key) == manifest
    assert manifest["decision"] == "compiled" and manifest["files"]["ab/kernel.so"]["bytes"] == 204
    assert not list(directory.glob(".*.tmp"))  # the atomic write left no temp file

    other = CacheKey(**{**key.to_dict(), "torch_version": "9.9.9"})
    with pytest.raises(CacheMissing, match="torch_version: '2.13|torch_version") as missing:
        read_manifest(other.directory(tmp_path), other)
    assert "build it (policy 'on'" in str(missing.value)  # the core's fix; Dagster adds its asset (below)
    assert "asset" not in str(missing.value)


def test_compiling_wraps_the_engine_targets_on_one_instance_and_make_eager_undoes_it():
    model, other = load_toto(DEFAULT_TINY_DIR), load_toto(DEFAULT_TINY_DIR)
    eager_methods = {f.__name__: f for f in TotoModel.compile_targets()}
    compile_in_place(model)  # torch.compile is lazy: nothing compiles until a wrapper is called
    assert is_compiled(model) and not is_compiled(other)
    assert {f.__name__: f for f in TotoModel.compile_targets()} == eager_methods  # the class stays eager
    removed = make_eager(model)
    assert sorted(removed) == ["_head", "_run_layers"] and not is_compiled(model)


def test_auto_keeps_eager_where_compiling_did_not_help():
    measured = {"eager_seconds": 1.00, "compiled_seconds": 0.98, "speedup": 1.0 / 0.98}
    assert decide(measured, 1e-7, 1e-3, 1.1)[0] == "eager"
    assert "did not help" in decide(measured, 1e-7, 1e-3, 1.1)[1]
    assert decide({**measured, "speedup": 1.5}, 1e-7, 1e-3, 1.1)[0] == "compiled"
    assert decide({**measured, "speedup": 1.5}, 2e-3, 1e-3, 1.1)[0] == "eager"  # parity first
    assert decide({**measured, "speedup": 1.5}, float("nan"), 1e-3, 1.1)[0] == "eager"


def test_materialize_toto_model_replaces_a_garbage_manifest(built):
    result = built["result"]
    assert result.success
    materialization = result.asset_materializations_for_node("toto_model")[0]
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert meta["compiled"] is True and meta["cache"] == "cold"
    assert "not readable JSON" in meta["cache_problem"]  # the garbage manifest was found and reported
    assert meta["reused_files"] == 0  # nothing could be verified without a manifest: cold build
    assert meta["parity_error"] <= meta["parity_tolerance"] and meta["speedup"] > 0
    check = result.get_asset_check_evaluations()[0]
    assert check.asset_check_key == AssetCheckKey(AssetKey("toto_model"), PARITY_CHECK) and check.passed

    directory = built["key"].directory(built["root"])
    manifest = read_manifest(directory, built["key"])  # valid, every file intact
    assert manifest["model_id"] == "bundled:toto-tiny" and manifest["revision"].startswith("sha256:")
    assert manifest["torch_version"] == torch.__version__ and manifest["device"] == "cpu"
    assert manifest["dtype"] == "float32" and manifest["compile_mode"] == "default"
    assert manifest["shapes"] == {"windows": 1, "context": 64, "horizon": 64, "samples": 16}
    assert manifest["created_at"] and manifest["measured"]["cold_compile_seconds"] > 0
    assert manifest["parity"]["passed"] and manifest["decision"] == "compiled"
    assert any(name.endswith(".so") for name in manifest["files"])


def test_truncated_kernel_is_reported_then_rebuilt(built, tmp_path):
    root, directory = copy_root(built, tmp_path)
    kernel = max((directory / INDUCTOR).rglob("*.so"), key=lambda p: p.stat().st_size)
    data = kernel.read_bytes()
    kernel.write_bytes(data[: len(data) // 2])

    auto = toto_runtime(root)
    auto.forecaster  # noqa: B018 (first use decides)
    report = auto.compile_report
    assert report["compiled"] is False and "truncated" in report["reason"] and kernel.name in report["reason"]

    on = toto_runtime(root, compile="on")
    on.forecaster  # noqa: B018
    report = on.compile_report
    assert report["compiled"] is True and report["cache"] == "cold" and kernel.name in report["cache_problem"]
    before = json.loads((built["key"].directory(built["root"]) / MANIFEST).read_text())["files"]
    manifest = read_manifest(directory, built["key"])  # rebuilt: every file intact again
    assert manifest["measured"]["reused_files"] == len(before) - 1  # all but the truncated kernel were reused
    rel = kernel.relative_to(directory / INDUCTOR).as_posix()
    assert manifest["files"][rel]["bytes"] == kernel.stat().st_size > len(data) // 2  # compiled again


def test_key_mismatch_is_reported_then_rebuilt(built, tmp_path):
    root, directory = copy_root(built, tmp_path)
    manifest = json.loads((directory / MANIFEST).read_text())
    manifest["key"]["torch_version"] = "2.0.0"
    (directory / MANIFEST).write_text(json.dumps(manifest))

    auto = toto_runtime(root)
    auto.forecaster  # noqa: B018
    assert auto.compile_report["compiled"] is False
    assert "torch_version: '2.0.0' in the manifest" in auto.compile_report["reason"]

    other_shape = toto_runtime(root, probe_samples=32)  # another key: no cache, and the reason says why
    other_shape.forecaster  # noqa: B018
    assert other_shape.compile_report["compiled"] is False
    assert "no compiled cache" in other_shape.compile_report["reason"]

    on = toto_runtime(root, compile="on")
    on.forecaster  # noqa: B018
    assert on.compile_report["compiled"] is True and "torch_version" in on.compile_report["cache_problem"]
    assert read_manifest(directory, built["key"])["key"]["torch_version"] == torch.__version__


def test_parity_failure_blocks_and_resources_fall_back_to_eager(built, tmp_path):
    root, directory = copy_root(built, tmp_path)
    # Compiled kernels may or may not round like eager ones (0 on some CPUs), so a real parity error
    # cannot be relied on to exceed any tolerance: the compiled forecasts are made 1% off instead.
    real_parity = policy.parity_error
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(built["home"]))
        patch.setattr(policy, "parity_error", lambda c, e: real_parity([x * 1.01 for x in c], e))
        result = materialize([toto_model], instance=DagsterInstance.get(), raise_on_error=False,
                             resources={"toto": toto_runtime(root, parity_tolerance=0.0)})
    assert not result.success  # the blocking check failed the step
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed and check.blocking
    meta = {k: v.value for k, v in result.asset_materializations_for_node("toto_model")[0].metadata.items()}
    assert meta["compiled"] is False and "above the tolerance 0" in meta["reason"] and meta["cache"] == "warm"
    manifest = read_manifest(directory, built["key"])
    assert manifest["decision"] == "eager" and manifest["parity"]["passed"] is False

    auto = toto_runtime(root)  # default tolerance, but the manifest's eager decision stands
    forecaster = auto.forecaster
    assert not is_compiled(forecaster.model)
    assert auto.compile_report["compiled"] is False and "differ from eager" in auto.compile_report["reason"]


def test_unmaterialized_and_off_run_eager_without_touching_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_DIR, str(tmp_path / "from-env"))
    assert TotoRuntime().compiled_dir == str(tmp_path / "from-env")
    kronos = KronosRuntime(device="cpu", compiled_dir=str(tmp_path / "none"))
    assert not is_compiled(kronos.forecaster.model)
    assert kronos.compile_report["compiled"] is False and "no compiled cache" in kronos.compile_report["reason"]
    assert "kronos_model" in kronos.compile_report["reason"]  # the resource says how to build it in Dagster

    off = toto_runtime(tmp_path / "off", compile="off")
    assert not is_compiled(off.forecaster.model)
    assert off.compile_report["reason"] == "eager: compile='off'" and not (tmp_path / "off").exists()
    with pytest.raises(ValueError, match="compile='fast'"):
        TotoRuntime(compile="fast")

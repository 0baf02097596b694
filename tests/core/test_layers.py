"""The layer split: forecast_core never imports Dagster (dagster, dagster_*) or the Dagster layer (hpo_assets,
resources), not even lazily inside a function; core and parity tests do not import them at module level.

Checked twice: statically (every import statement in the source, wherever it sits) and by importing every
forecast_core module in a fresh interpreter and looking at what got loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from tests.support import REPO

DAGSTER_LAYER = ("dagster", "hpo_assets", "resources")  # plus every dagster_* package (dagster_dbt, ...)


def _forbidden(module: str) -> bool:
    top = module.split(".")[0]
    return top in DAGSTER_LAYER or top.startswith("dagster_")


def _imports(node: ast.AST) -> list[tuple[int, str]]:
    """(line, absolute module name) of the import statements directly in ``node`` (relative ones are in-package)."""
    if isinstance(node, ast.Import):
        return [(node.lineno, alias.name) for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [(node.lineno, node.module)]
    return []


def _dynamic_imports(node: ast.AST) -> list[tuple[int, str]]:
    """importlib.import_module("x") / __import__("x") with a literal name."""
    if isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
            and isinstance(node.args[0].value, str):
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
        if name in ("import_module", "__import__"):
            return [(node.lineno, node.args[0].value)]
    return []


def _sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_forecast_core_source_imports_the_dagster_layer_anywhere():
    files = _sources(REPO / "forecast_core")
    assert len(files) > 20  # the walk found the package
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for line, module in _imports(node) + _dynamic_imports(node):
                if _forbidden(module):
                    found.append(f"{path.relative_to(REPO)}:{line}: {module}")
    assert found == [], "forecast_core must stay Dagster-free; move these imports to hpo_assets:\n" + "\n".join(found)


def test_importing_every_forecast_core_module_loads_no_dagster_layer_module():
    code = """
import importlib, json, pkgutil, sys
import forecast_core
names = sorted(m.name for m in pkgutil.walk_packages(forecast_core.__path__, "forecast_core."))
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "loaded": sorted(sys.modules)}))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"forecast_core.selection", "forecast_core.sweep.spaces", "forecast_core.kronos.model"} \
        <= set(report["modules"])
    assert [m for m in report["loaded"] if _forbidden(m)] == []


def test_core_and_parity_tests_do_not_import_the_dagster_layer_at_module_level():
    """Module level includes imports under top-level if/try blocks; imports inside functions are lazy, allowed."""
    files = [p for folder in ("core", "parity") for p in _sources(REPO / "tests" / folder)]
    assert any(p.name == "test_layers.py" for p in files)
    found = []
    for path in files:
        pending = list(ast.parse(path.read_text(), str(path)).body)
        while pending:
            node = pending.pop()
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            found += [f"{path.relative_to(REPO)}:{line}: {module}" for line, module in _imports(node)
                      if _forbidden(module)]
            pending += [child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt)]
    assert found == [], "import these inside the test that needs them (or move the test to tests/assets):\n" \
        + "\n".join(found)

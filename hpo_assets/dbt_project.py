"""The dbt project in dbt_metrics/ and its manifest, from which hpo_assets.dbt_marts defines the dbt assets.

Importing this module runs no dbt outside ``dagster dev``: the manifest is a build step (``make``, the
image build in deploy/Dockerfile, or :func:`prepare_manifest`, which the ``hpo`` command calls).
Under ``dagster dev`` dagster-dbt's ``prepare_if_dev`` re-parses once the project has changed, so
edits show on reload. It imports without a manifest, so ``dagster-dbt project prepare-and-package
--file hpo_assets/dbt_project.py`` can load it to make one.
"""

import contextlib
import os
import shutil
import sys
import warnings
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject

DBT_PROJECT_DIR = Path(os.environ.get("HPO_DBT_PROJECT_DIR", Path(__file__).resolve().parent.parent / "dbt_metrics"))
dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
# The dbt installed beside this Python, so an un-activated virtual environment works too.
DBT_EXECUTABLE = shutil.which("dbt", path=str(Path(sys.executable).parent)) or shutil.which("dbt") or "dbt"
# What `make` and the image build run (from the repository root) to make the manifest.
PREPARE_MANIFEST = "dagster-dbt project prepare-and-package --file hpo_assets/dbt_project.py"


def dbt_resource() -> DbtCliResource:
    return DbtCliResource(project_dir=dbt_project, dbt_executable=DBT_EXECUTABLE)


def changed_since_manifest() -> list[Path]:
    """The project files newer than the manifest (every one of them when there is no manifest)."""
    root = dbt_project.project_dir
    sources = [root / "dbt_project.yml", root / "profiles.yml"]
    for folder in ("models", "macros", "tests"):
        sources.extend(path for path in (root / folder).rglob("*") if path.is_file())
    if not dbt_project.manifest_path.exists():
        return sources
    built = dbt_project.manifest_path.stat().st_mtime
    return [path for path in sources if path.stat().st_mtime > built]


def prepare_manifest() -> Path:
    """``dbt parse`` when the manifest is missing or older than a project file; its path.

    For commands that load the definitions outside ``dagster dev`` (the ``hpo`` command), so an edited
    dbt project is parsed once before they load instead of at every import."""
    if changed_since_manifest():
        with contextlib.redirect_stdout(sys.stderr):  # dbt's log is progress: stdout stays for the command's results
            dbt_resource().cli(["parse", "--quiet"], target_path=dbt_project.target_path).wait()
    return dbt_project.manifest_path


def require_manifest() -> Path:
    """The manifest's path; a clear error when it is missing, a warning when the project changed since."""
    path = dbt_project.manifest_path
    if not path.exists():
        raise FileNotFoundError(f"no dbt manifest at {path}: the dbt assets are defined from it. Create it with "
                                f"`make` (or `{PREPARE_MANIFEST}` from the repository root).")
    changed = changed_since_manifest()
    if changed:
        warnings.warn(f"the dbt manifest {path} is older than {changed[0]} ({len(changed)} changed file(s)): the "
                      f"dbt assets follow the old project until you run `make` (or `{PREPARE_MANIFEST}`)",
                      stacklevel=2)
    return path


if changed_since_manifest():
    dbt_project.prepare_if_dev()  # under `dagster dev` only (dagster-dbt): parse again after an edit

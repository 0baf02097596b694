# Set-up and the two everyday commands: `make demo` (main job on the embedded data) and `make test`.
# GPU users: create .venv, install your own torch build into it, then run with TORCH_SPEC= (empty).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export HPO_STORAGE_DIR ?= $(CURDIR)/storage
# The dbt manifest the dbt assets are defined from: made here, never when the code location loads
# (hpo_assets/dbt_project.py), and made again whenever a file of the dbt project changes.
DBT_MANIFEST := dbt_metrics/target/manifest.json
DBT_FILES := $(shell find dbt_metrics \( -name target -o -name logs -o -name dbt_packages \) -prune -o -type f \
	\( -name '*.sql' -o -name '*.yml' -o -name '*.csv' \) -print)
# dagster-dbt runs `dbt` from PATH (prepare-and-package here, prepare_if_dev under `dagster dev`).
WITH_VENV_PATH := PATH="$(abspath $(BIN)):$$PATH"

# Upstream packages, only for the parity tests: installed without their exact pins into their own
# folders (never into .venv), imported from there by benchmarks/upstream/*.py.
UPSTREAM_TOTO := toto-ts==0.2.0 rotary-embedding-torch==0.8.6 jaxtyping==0.3.11 wadler-lindig==0.1.8 \
	toolz==1.2.0 gluonts==0.16.2 einops==0.8.2 scipy==1.17.1
UPSTREAM_KRONOS := kronos-model-arch==0.1.0 einops==0.8.2
# toto-2 declares Python >= 3.12 but its code parses on 3.11; unit-scaling needs tabulate and
# docstring-parser, which .venv already has (dagster's).
UPSTREAM_TOTO2 := toto-2==2.0.0 dd-unit-scaling==0.1.0 unit-scaling==0.3.5 einops==0.8.2 jaxtyping==0.3.11 \
	wadler-lindig==0.1.8 toolz==1.2.0 gluonts==0.16.2

.PHONY: demo test dev daemon automation validate clean screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(if $(TORCH_SPEC),$(BIN)/pip install --quiet "$(TORCH_SPEC)")
	$(BIN)/pip install --quiet -e ".[test,k8s]"
	touch $@

# The environment is usable once its dbt manifest exists, so every target below depends on this one.
$(DBT_MANIFEST): $(DBT_FILES) $(VENV)/.installed
	$(WITH_VENV_PATH) $(BIN)/dagster-dbt project prepare-and-package --file hpo_assets/dbt_project.py
	test -f $@

demo: $(DBT_MANIFEST)
	$(BIN)/hpo demo

.upstream/.installed: Makefile | $(BIN)/python
	$(BIN)/pip install --quiet --no-deps --upgrade --target .upstream/toto $(UPSTREAM_TOTO)
	$(BIN)/pip install --quiet --no-deps --upgrade --target .upstream/kronos $(UPSTREAM_KRONOS)
	$(BIN)/pip install --quiet --no-deps --upgrade --ignore-requires-python --target .upstream/toto2 $(UPSTREAM_TOTO2)
	touch $@

test: $(DBT_MANIFEST) .upstream/.installed
	$(BIN)/pytest

dev: $(DBT_MANIFEST)
	mkdir -p "$(DAGSTER_HOME)"
	$(WITH_VENV_PATH) $(BIN)/dagster dev -w workspace.yaml

# The daemon alone (schedules, sensors, the marts-and-config-files automation), without the UI.
daemon: $(DBT_MANIFEST)
	mkdir -p "$(DAGSTER_HOME)"
	$(WITH_VENV_PATH) $(BIN)/dagster-daemon run -w workspace.yaml

# Turn on what starts tunes by itself (all off by default; README "Automation"). The automation that
# carries each tune on to the marts and the config files runs by default.
automation: $(DBT_MANIFEST)
	mkdir -p "$(DAGSTER_HOME)"
	$(WITH_VENV_PATH) $(BIN)/dagster schedule start weekly_retune -w workspace.yaml
	$(WITH_VENV_PATH) $(BIN)/dagster sensor start price_source_sensor -w workspace.yaml
	$(WITH_VENV_PATH) $(BIN)/dagster sensor start stale_config_sensor -w workspace.yaml

# The README's UI screenshots (docs/ui-*.png): a demo instance in a temp folder, the real webserver,
# headless Chromium (apt-get install chromium). SCREENSHOT_ARGS=--reuse skips re-running the demo.
screenshots: $(DBT_MANIFEST)
	$(BIN)/python scripts/ui_screenshots.py $(SCREENSHOT_ARGS)

validate: $(DBT_MANIFEST)
	$(BIN)/dagster definitions validate -w workspace.yaml

clean:
	rm -rf "$(HPO_STORAGE_DIR)" "$(DAGSTER_HOME)" dbt_metrics/target dbt_metrics/logs

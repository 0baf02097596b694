# Set-up and the two everyday commands: `make demo` (main job on the embedded data) and `make test`.
# GPU users: create .venv, install your own torch build into it, then run with TORCH_SPEC= (empty).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export HPO_STORAGE_DIR ?= $(CURDIR)/storage

.PHONY: demo test dev validate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(if $(TORCH_SPEC),$(BIN)/pip install --quiet "$(TORCH_SPEC)")
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/hpo demo

test: $(VENV)/.installed
	$(BIN)/pytest

dev: $(VENV)/.installed
	mkdir -p "$(DAGSTER_HOME)"
	$(BIN)/dagster dev -w workspace.yaml

validate: $(VENV)/.installed
	$(BIN)/dagster definitions validate -w workspace.yaml

clean:
	rm -rf "$(HPO_STORAGE_DIR)" "$(DAGSTER_HOME)" dbt_metrics/target dbt_metrics/logs

"""The storage resource: price Parquet, trial Parquet and the DuckDB file dbt builds."""

from __future__ import annotations

import os

from dagster import ConfigurableResource
from pydantic import Field, field_validator

from forecast_core.forward import ForwardStore
from forecast_core.store import Storage


def default_storage_dir() -> str:
    return os.environ.get("HPO_STORAGE_DIR") or os.path.join(os.getcwd(), "storage")


def default_hyperparams_dir() -> str:
    return os.environ.get("HPO_HYPERPARAMS_DIR") or os.path.join(os.getcwd(), "hyperparams")


class StorageResource(ConfigurableResource):
    """Where the pipeline stores data (``HPO_STORAGE_DIR``, default ./storage) and writes the
    selected config files (``HPO_HYPERPARAMS_DIR``, default ./hyperparams)."""

    root: str = Field(default_factory=default_storage_dir)
    hyperparams_dir: str = Field(default_factory=default_hyperparams_dir)

    @field_validator("root")
    @classmethod
    def _plain_path(cls, value: str) -> str:
        if any(ch in value for ch in "'\"\n;"):
            raise ValueError(f"storage root {value!r} must not contain quotes, ';' or newlines")
        return value

    def storage(self) -> Storage:
        return Storage(self.root)

    def dbt_env(self) -> dict[str, str]:
        """Environment for dbt: where the DuckDB file, the trial and the selection Parquet files are."""
        store = self.storage()
        return {"HPO_METRICS_DB": str(store.duckdb_path), "HPO_TRIALS_DIR": str(store.trials_dir),
                "HPO_SELECTION_DIR": str(store.selection_dir), "HPO_FORWARD_DIR": str(ForwardStore(store.root).dir)}

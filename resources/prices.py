"""The price source resource: embedded data (default), a CSV directory, or yfinance."""

from __future__ import annotations

import os

from dagster import ConfigurableResource
from pydantic import Field

from forecast_core.sources import PriceSource, make_source


class PriceSourceResource(ConfigurableResource):
    """Where ``price_history`` reads bars from; switch ``kind`` in the launchpad or definitions."""

    kind: str = Field(default_factory=lambda: os.environ.get("HPO_PRICE_SOURCE", "embedded"),
                      description="embedded | csv_dir | yfinance (default: $HPO_PRICE_SOURCE or embedded)")
    csv_dir: str = Field(default_factory=lambda: os.environ.get("HPO_CSV_DIR", ""),
                         description="directory of SYMBOL.csv files for kind=csv_dir (default: $HPO_CSV_DIR)")
    yfinance_symbols: list[str] = Field(default_factory=list, description="symbols to list (kind=yfinance)")

    def source(self) -> PriceSource:
        return make_source(self.kind, self.csv_dir, self.yfinance_symbols)

"""The price source resource: embedded data (default), a CSV directory, or yfinance, with its policy."""

from __future__ import annotations

import os

from dagster import ConfigurableResource
from pydantic import Field, ValidationInfo, field_validator

from forecast_core.repairs import (
    MISSING_POLICIES,
    POLICY_ENV,
    PRICE_FIELDS,
    SPLIT_POLICIES,
    PricePolicy,
    check_choice,
    policy_default,
)
from forecast_core.sources import PriceSource, make_source


def _choice(name: str, allowed: tuple[str, ...], text: str):
    return Field(default_factory=lambda: policy_default(name), validate_default=True,
                 description=f"{' | '.join(allowed)}: {text} (default: ${POLICY_ENV[name]} or {allowed[0]})")


class PriceSourceResource(ConfigurableResource):
    """Where ``price_history`` reads bars from; switch ``kind`` in the launchpad or definitions.

    The policy fields travel with the source (``source().load`` repairs), so the CLI gets them too.
    """

    kind: str = Field(default_factory=lambda: os.environ.get("HPO_PRICE_SOURCE", "embedded"),
                      description="embedded | csv_dir | yfinance (default: $HPO_PRICE_SOURCE or embedded)")
    csv_dir: str = Field(default_factory=lambda: os.environ.get("HPO_CSV_DIR", ""),
                         description="directory of SYMBOL.csv files for kind=csv_dir (default: $HPO_CSV_DIR)")
    yfinance_symbols: list[str] = Field(default_factory=list, description="symbols to list (kind=yfinance)")
    missing: str = _choice("missing", MISSING_POLICIES,
                           "bars with missing OHLC fail the partition, are dropped, or carry the last close "
                           "(volume 0); missing volume becomes 0 under drop and ffill")
    splits: str = _choice("splits", SPLIT_POLICIES,
                          "jumps matching a split ratio only warn, or earlier bars are back-adjusted")
    price_field: str = _choice("price_field", PRICE_FIELDS,
                               "score on the close, or on the adjusted close (OHLC scaled alike, needs the column)")

    @field_validator("missing", "splits", "price_field")
    @classmethod
    def _allowed(cls, value: str, info: ValidationInfo) -> str:
        return check_choice(info.field_name, value)

    def policy(self) -> PricePolicy:
        return PricePolicy(self.missing, self.splits, self.price_field)

    def source(self) -> PriceSource:
        return make_source(self.kind, self.csv_dir, self.yfinance_symbols, self.policy())

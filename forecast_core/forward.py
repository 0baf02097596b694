"""The forward scorecard: every stored config checked on the bars that arrived after it was chosen.

A config file records the last bar its selection saw (``metadata.data_end``). Every complete H-bar
window whose origin lies after that bar is a test the config could not have been chosen on: truly
out-of-sample. A *scorecard* is one stored file (``toto``, ``kronos``, ``best``) as selected at one
time; it scores, on the same forward windows and seeds as the backtest would use, the file's config
and its references: persistence, the random walk and the model's default config. Windows are
non-overlapping, laid from the first bar after ``data_end`` in steps of H, with the file's context.

Storage (beside the trials): ``forward/symbol=SYM/<scorecard>.parquet``, one file per scorecard,
rewritten atomically with the old rows plus the newly completed windows, so re-running adds only new
windows and a killed run loses nothing already stored. A re-tuned config is a new scorecard; the old
file stays as history and is no longer extended.

The report compares the file's config with each reference on the forward windows with the test
report's paired block bootstrap (:func:`forecast_core.significance.paired_interval`: one config fixed
in advance, so there is no selection to correct for), and counts the latest forward windows in a row
where the config was worse than persistence. :func:`drift_reason` turns that into a re-tune request.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from .backtest import Draw, Trial, score_trials
from .configs import KINDS, ConfigFileError, config_path, read_config
from .data import validate_symbol
from .files import atomic_write_parquet, remove_stale_temp_files
from .significance import paired_interval
from .sweep.budgets import BASELINE_TRIALS
from .sweep.spaces import default_trials, toto2_default, toto2_trial, toto_trial
from .windows import WindowSpec, Windows, windows_at

FORWARD = "forward"
REFERENCES = ("persistence", "default")  # what a stored config must not fall behind


def document_trial(model: str, config: Mapping) -> Trial:
    """The trial a config file's ``config`` block describes (runtime-only knobs such as
    ``samples_per_batch`` are not part of it)."""
    if model == "toto":
        return toto_trial(config["num_samples"], config["aggregate"])
    if model == "toto2":
        return toto2_trial(config["checkpoint"], config["context_length"], config["decode_block_size"],
                           config["variates"], config["aggregate"])
    if model == "kronos":
        knobs = {k: v for k, v in config.items() if k not in ("name", "max_rows")}
        return Trial("kronos", knobs, int(knobs["sample_count"]), knobs["aggregate"])
    if model in BASELINE_TRIALS:
        return BASELINE_TRIALS[model]
    raise ValueError(f"no forecaster for model {model!r} in a config file; known: toto, toto2, kronos, "
                     f"{', '.join(BASELINE_TRIALS)}")


@dataclass(frozen=True)
class Scorecard:
    """One stored config file as selected at one time, and the trials it scores going forward."""

    symbol: str
    kind: str  # toto | kronos | best
    model: str  # the file's model (for best: the winner, possibly a baseline)
    selected_at: str
    data_end: pd.Timestamp
    horizon: int
    context: int
    trials: Mapping[str, Trial]  # role -> trial

    @property
    def id(self) -> str:
        parts = [self.symbol, self.kind, self.selected_at, str(self.data_end.date()), self.trials["selected"].config_hash]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def current_scorecards(root: str | Path, symbol: str) -> tuple[list[Scorecard], list[str]]:
    """The scorecards of ``symbol``'s stored config files, and why any file was left out."""
    symbol, root = validate_symbol(symbol), Path(root)
    documents, problems = {}, []
    for kind in KINDS:
        path = config_path(root, kind, symbol)
        if not path.exists():
            continue
        try:
            documents[kind] = read_config(path, kind)
        except ConfigFileError as exc:
            problems.append(str(exc))
    cards = []
    for kind, document in documents.items():
        model = document["model"]
        # best has no windows or data end of its own: those of the file it points at (for a baseline
        # winner, of any model file: all of one symbol's files come from the same selection)
        source = document
        if kind == "best":
            source = documents.get(model) if model not in BASELINE_TRIALS else next(
                (d for k, d in documents.items() if k != "best"), None)
        if source is None:
            problems.append(f"{symbol}: best config names {model} but no readable model config file holds its "
                            "windows and data end; re-run the config selection for this symbol")
            continue
        windows = source["windows"]
        if int(windows["context"]) < 1:
            problems.append(f"{symbol}: {kind} config was kept without any scored window (history too short): "
                            "no forward windows until it is re-tuned")
            continue
        trials = {"selected": document_trial(model, document["config"]),
                  "persistence": BASELINE_TRIALS["persistence"], "random_walk": BASELINE_TRIALS["random_walk"]}
        if model == "toto2":  # the default config on the checkpoint the file chose
            trials["default"] = toto2_default(trials["selected"].knobs["checkpoint"])
        elif model in default_trials():
            trials["default"] = default_trials()[model]
        data_end = pd.Timestamp(source["metadata"]["data_end"])
        cards.append(Scorecard(symbol, kind, model, document["metadata"]["selected_at"], data_end,
                               int(windows["forecast_horizon"]), int(windows["context"]), trials))
    return cards, problems


def forward_windows(prices: pd.DataFrame, card: Scorecard, base_seed: int = 0) -> Windows | None:
    """Every complete window whose origin is after the card's data end, in steps of H (None: none yet)."""
    stamps = prices["timestamp"].to_numpy(dtype="datetime64[ns]")
    first = int(np.searchsorted(stamps, np.datetime64(card.data_end + pd.Timedelta(days=1), "ns"), side="left"))
    first = max(first, card.context)
    origins = np.arange(first, len(prices) - card.horizon + 1, card.horizon, dtype=np.int64)
    if len(origins) == 0:
        return None
    spec = WindowSpec(horizon=card.horizon, n_val=0, n_test=len(origins), context=card.context)
    return windows_at(prices, origins, np.array([FORWARD] * len(origins)), spec, card.symbol, base_seed)


class ForwardStore:
    """``forward/symbol=SYM/<scorecard>.parquet`` and ``forward/report/symbol=SYM.parquet`` under the
    storage root."""

    def __init__(self, root: str | Path):
        self.dir = Path(root) / FORWARD

    def path(self, card: Scorecard) -> Path:
        return self.dir / f"symbol={card.symbol}" / f"{card.id}.parquet"

    def report_path(self, symbol: str) -> Path:
        return self.dir / "report" / f"symbol={validate_symbol(symbol)}.parquet"

    def write_report(self, symbol: str, report: pd.DataFrame) -> Path:
        return atomic_write_parquet(self.report_path(symbol), report)

    def read_report(self, symbol: str, hyperparams_dir: str | Path | None = None) -> pd.DataFrame:
        """``symbol``'s scorecards. With ``hyperparams_dir``, ``current`` marks those of the config files
        stored there now: forward_scores marks them when it runs, and a re-tune since has replaced the
        files (their new scorecards have no forward window yet)."""
        path = self.report_path(symbol)
        report = pd.read_parquet(path) if path.exists() else forward_report(pd.DataFrame(), set())
        if hyperparams_dir is None or report.empty:
            return report
        cards, _ = current_scorecards(hyperparams_dir, symbol)
        return report.assign(current=report["scorecard"].isin({card.id for card in cards}))

    def read(self, symbol: str) -> pd.DataFrame:
        """Every scorecard's rows of ``symbol`` (current and historical)."""
        files = sorted((self.dir / f"symbol={validate_symbol(symbol)}").glob("*.parquet"))
        frames = [pd.read_parquet(f) for f in files]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def scored_origins(self, card: Scorecard) -> set[pd.Timestamp]:
        """Origins (timestamps: bar indices shift when earlier history is backfilled) already stored."""
        path = self.path(card)
        return set(pd.read_parquet(path, columns=["window_origin"])["window_origin"]) if path.exists() else set()

    def append(self, card: Scorecard, rows: pd.DataFrame) -> Path:
        """The card's stored rows plus ``rows`` (windows not yet stored), written atomically."""
        path = self.path(card)
        old = pd.read_parquet(path) if path.exists() else rows.iloc[:0]
        fresh = rows[~rows["window_origin"].isin(old["window_origin"])]
        return atomic_write_parquet(path, pd.concat([old, fresh], ignore_index=True))

    def remove_stale_temp_files(self, symbol: str) -> list[Path]:
        """Temp files of writers killed mid-write (readers never see them; this keeps them from piling up)."""
        return remove_stale_temp_files(self.dir / f"symbol={validate_symbol(symbol)}")


Forecast = Callable[[Trial, Windows], Draw]  # a trial's paths (or quantiles) on windows


def forecast_with(toto: Callable[[], object] | None = None, kronos: Callable[[], object] | None = None,
                  toto2: Callable[[str], object] | None = None) -> Forecast:
    """Any trial's forecast: Toto and Kronos from the given (lazily loaded) forecasters, Toto 2.0 from the
    model of the trial's checkpoint label (``toto2(label)``), baselines as they are."""
    from .forecasters import BASELINES
    from .sweep.spaces import kronos_config
    from .toto2 import QUANTILE_LEVELS
    from .sweep.plans import toto2_forecaster, with_config

    def need(loader, model: str):
        if loader is None:
            raise ValueError(f"a {model} trial was given but no {model} runtime to forecast it with")
        return loader

    def forecast(trial: Trial, windows: Windows) -> Draw:
        if trial.model == "toto":
            return Draw(need(toto, "toto")().sample_paths(windows.batch, trial.num_samples), 0.0)
        if trial.model == "kronos":
            forecaster = with_config(need(kronos, "kronos")(), kronos_config(trial))
            return Draw(forecaster.sample_paths(windows.batch, trial.num_samples), 0.0)
        if trial.model == "toto2":
            model = need(toto2, "toto2")(trial.knobs["checkpoint"])
            return Draw(toto2_forecaster(model, trial).quantiles(windows.batch), 0.0, QUANTILE_LEVELS)
        return Draw(BASELINES[trial.model].sample_paths(windows.batch, trial.num_samples), 0.0)

    return forecast


def score_forward(store: ForwardStore, card: Scorecard, prices: pd.DataFrame, forecast: Forecast,
                  base_seed: int = 0) -> int:
    """Score the card's trials on its forward windows not yet stored; returns the windows added."""
    windows = forward_windows(prices, card, base_seed)
    if windows is None:
        return 0
    scored = np.array(sorted(store.scored_origins(card)), dtype="datetime64[ns]")
    pending = ~np.isin(windows.origin_timestamps, scored)
    if not pending.any():
        return 0
    todo = windows.select(pending)
    frames = []
    for role, trial in card.trials.items():
        rows = score_trials(todo, forecast(trial, todo), [trial])
        frames.append(rows.assign(role=role))
    rows = pd.concat(frames, ignore_index=True).assign(
        scorecard=card.id, kind=card.kind, file_model=card.model, selected_at=card.selected_at,
        data_end=card.data_end, horizon=card.horizon, context=card.context,
        written_at=pd.Timestamp(datetime.now(timezone.utc).replace(tzinfo=None)))
    store.append(card, rows.drop(columns=["split", "draw_seconds", "drawn_samples", "is_default"]))
    return int(pending.sum())


# -- the report and the re-tune decision ----------------------------------------------------------
@dataclass(frozen=True)
class DriftPolicy:
    """When forward evidence asks for a re-tune (the stale-config sensor's settings).

    ``margin``: the config's forward MAE% exceeds a reference's by this fraction of the reference's,
    and the test's 95% interval lies above zero. ``consecutive``: the latest this many forward
    windows in a row were all worse than persistence. ``min_windows``: evidence needed at all.
    """

    margin: float = 0.10
    consecutive: int = 4
    min_windows: int = 3

    def __post_init__(self) -> None:
        if self.margin < 0 or self.consecutive < 1 or self.min_windows < 1:
            raise ValueError(f"drift policy: margin >= 0, consecutive >= 1 and min_windows >= 1 needed, got {self}")


REPORT_TYPES = {
    "symbol": "string", "kind": "string", "scorecard": "string", "file_model": "string", "config_name": "string",
    "selected_at": "string", "data_end": "datetime64[ns]", "current": "boolean", "forward_windows": "Int64",
    "first_origin": "datetime64[ns]", "last_origin": "datetime64[ns]", "mae_pct": "float64", "crps_pct": "float64",
    "persistence_mae_pct": "float64", "default_mae_pct": "float64", "default_crps_pct": "float64",
    "random_walk_crps_pct": "float64",
    "ratio_to_persistence": "float64", "diff_vs_persistence": "float64", "ci_low_vs_persistence": "float64",
    "ci_high_vs_persistence": "float64", "diff_vs_default": "float64", "ci_low_vs_default": "float64",
    "ci_high_vs_default": "float64", "worse_than_persistence_in_a_row": "Int64",
}
REPORT_COLUMNS = list(REPORT_TYPES)


def forward_report(rows: pd.DataFrame, current: set[str]) -> pd.DataFrame:
    """One row per scorecard: forward windows so far, mean scores, and the config vs its references;
    ordered by kind (configs.KINDS), then by selection time, so every reader (and the first drift
    reason) is the same from run to run."""
    out = []
    for card_id, card in rows.groupby("scorecard", sort=False) if not rows.empty else []:
        wide = card.pivot_table(index="window_origin", columns="role", values="mae_pct", aggfunc="first").sort_index()
        crps = card.pivot_table(index="window_origin", columns="role", values="crps_pct", aggfunc="first")
        selected = card[card["role"] == "selected"]
        first = selected.iloc[0]
        row = {"symbol": first["symbol"], "kind": first["kind"], "scorecard": card_id, "file_model": first["file_model"],
               "config_name": first["config_name"], "selected_at": first["selected_at"], "data_end": first["data_end"],
               "current": card_id in current, "forward_windows": len(wide),
               "first_origin": selected["window_origin"].min(), "last_origin": selected["window_origin"].max(),
               "mae_pct": wide["selected"].mean(), "crps_pct": crps["selected"].mean(),
               "persistence_mae_pct": wide["persistence"].mean(),
               "default_mae_pct": wide["default"].mean() if "default" in wide else None,
               "default_crps_pct": crps["default"].mean() if "default" in crps else None,
               "random_walk_crps_pct": crps["random_walk"].mean() if "random_walk" in crps else None}
        row["ratio_to_persistence"] = row["mae_pct"] / row["persistence_mae_pct"] if row["persistence_mae_pct"] else None
        seed = int.from_bytes(hashlib.blake2b(card_id.encode(), digest_size=4).digest(), "little")
        for reference in REFERENCES:
            if reference in wide:
                interval = paired_interval((wide["selected"] - wide[reference]).to_numpy(), 1, seed)
                row.update({f"diff_vs_{reference}": interval.mean_diff, f"ci_low_vs_{reference}": interval.ci_low,
                            f"ci_high_vs_{reference}": interval.ci_high})
        worse = (wide["selected"] > wide["persistence"]).to_numpy()[::-1]
        row["worse_than_persistence_in_a_row"] = int(np.argmin(worse)) if not worse.all() else len(worse)
        out.append(row)
    out.sort(key=lambda r: (KINDS.index(r["kind"]), r["selected_at"]))
    return pd.DataFrame(out, columns=REPORT_COLUMNS).astype(REPORT_TYPES)


def drift_reason(report: pd.DataFrame, policy: DriftPolicy) -> str | None:
    """Why the current scorecards' forward evidence asks for a re-tune, or None."""
    for row in report[report["current"]].itertuples(index=False) if not report.empty else []:
        if row.forward_windows < policy.min_windows:
            continue
        where = f"{row.kind} config {row.config_name} on {row.forward_windows} forward windows"
        for reference in REFERENCES:
            diff, low = getattr(row, f"diff_vs_{reference}"), getattr(row, f"ci_low_vs_{reference}")
            base = row.persistence_mae_pct if reference == "persistence" else row.default_mae_pct
            if diff is None or low is None or base is None or pd.isna(low):
                continue
            if diff > policy.margin * base and low > 0:
                return (f"{where}: MAE% {row.mae_pct:.2f} vs {reference} {base:.2f}, worse by more than "
                        f"{policy.margin:.0%} (95% interval of the difference {low:.2f}..)")
        if row.worse_than_persistence_in_a_row >= policy.consecutive:
            return (f"{where}: worse than persistence on the last {row.worse_than_persistence_in_a_row} "
                    f"forward windows in a row (threshold {policy.consecutive})")
    return None


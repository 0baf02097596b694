"""Which config each symbol keeps and which model (or baseline) it should use: the statistics.

Runs between the dbt aggregation (``stg_trials``: every window of each symbol's current evaluation)
and the selection marts, which only join these decisions to their metrics. Everything is decided
on validation windows with :func:`forecast_core.significance.selection_test` (StepM at 5% over
every config scored, SPA p-value, MCS at 10%); test windows are only reported, with the same
block bootstrap (:func:`forecast_core.significance.paired_interval`).

Per model, in order:

1. **Pooled challenger.** Over the tunable symbols, the configs scored on every one of them are
   compared on pooled windows: the losses of the symbols' k-th last validation windows are averaged
   (histories that end together put the same dates there, so the symbols' common moves stay inside
   one resampled unit). The pooled best becomes the challenger when it beats the default under
   the selection test; otherwise there is none and each symbol is compared with its default.
2. **Per symbol.** With a challenger scored on the symbol, the symbol keeps its own best config only
   when that beats the challenger under the same test; otherwise the challenger is selected. With
   none, the best config must beat the default; if it does not, the cheaper of the two wins.
3. **Model choice.** Each model's selected config and the random walk compete against
   persistence: the lowest validation MAE% wins only when it beats persistence under the same
   test; otherwise persistence is named (a normal outcome on daily prices, BRIEF §11).

What the test cannot count: Kronos's TPE proposals screened on the last validation windows and not
promoted have no scores on the other windows, so only the promoted ones are in the test, and they
were picked partly on windows the test uses; the pooled challenger and the cheaper-config rule bound
what such optimism can cost.

Pretraining periods: a window is *in* a model's pretraining period when its target starts on or
before the last date the model may have seen (:mod:`forecast_core.pretraining`); the test report
adds rows over the out-of-sample test windows alone wherever there are any.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from .configs import MODELS as TUNED_MODELS
from .pretraining import Cutoff, describe, in_pretraining_period
from .significance import SelectionTest, paired_interval, selection_test

REFERENCE = "persistence"  # the point-forecast reference every model must beat
PROBABILISTIC_REFERENCE = "random_walk"  # the reference for CRPS% (persistence has no spread)
MIN_POOLED_SYMBOLS = 2

# Column types of the tables this module produces: the one definition the Parquet files and the
# dbt sources (dbt_metrics/models/selection/sources.yml) follow.
TABLES: dict[str, dict[str, str]] = {
    "decisions": {
        "symbol": "string", "model": "string", "selected_config_hash": "string", "best_val_config_hash": "string",
        "default_config_hash": "string", "pooled_config_hash": "string", "selection_basis": "string",
        "selection_test": "string", "p_value_vs_default": "float64", "significant_vs_default": "boolean",
        "p_value_vs_pooled": "float64", "significant_vs_pooled": "boolean", "pooled_outcome": "string",
        "val_diff_vs_default": "float64", "configs_tested": "Int64", "windows_tested": "Int64",
        "block_length": "Int64", "confidence_set_size": "Int64", "confidence_set": "string",
        "selection_reason": "string",
    },
    "pooled": {
        "model": "string", "best_config_hash": "string", "default_config_hash": "string",
        "challenger_config_hash": "string", "symbols": "Int64", "windows": "Int64", "configs": "Int64",
        "p_value": "float64", "significant_vs_default": "boolean", "selection_test": "string", "outcome": "string",
    },
    "winner_tests": {
        "symbol": "string", "winning_model": "string", "winning_config_hash": "string", "candidates": "string",
        "p_value_vs_persistence": "float64", "significant_vs_persistence": "boolean", "selection_test": "string",
        "choice_reason": "string",
    },
    "test_comparisons": {
        "symbol": "string", "model": "string", "reference": "string", "metric": "string", "subset": "string",
        "mean_diff": "float64", "reference_mean": "float64", "ci_low": "float64", "ci_high": "float64",
        "windows": "Int64", "significantly_better": "boolean",
    },
    "pretraining": {
        "symbol": "string", "model": "string", "model_id": "string", "cutoff_known": "boolean",
        "seen_through": "datetime64[ns]", "cutoff_kind": "string", "cutoff_source": "string",
        "val_windows_in_pretraining": "Int64", "test_windows": "Int64", "test_windows_out_of_sample": "Int64",
        "statement": "string",
    },
    "pretraining_windows": {
        "symbol": "string", "model": "string", "split": "string", "origin_index": "Int64",
        "window_origin": "datetime64[ns]", "in_pretraining_period": "boolean",
    },
}

TRIAL_COLUMNS = ["symbol", "model", "config_hash", "config_name", "split", "origin_index", "window_origin",
                 "mae_pct", "crps_pct", "seconds", "is_default", "tunable", "block_length", "layout_reason"]


def table(name: str, rows: list[dict]) -> pd.DataFrame:
    """Rows as a frame with the declared columns and types (an empty table keeps its schema)."""
    columns = TABLES[name]
    frame = pd.DataFrame(rows, columns=list(columns))
    return frame.astype(columns)


def _seed(*parts: str) -> int:
    return zlib.crc32("|".join(parts).encode())


@dataclass(frozen=True)
class _Losses:
    """Validation MAE% of one (symbol, model): windows in origin order x configs scored on all."""

    losses: np.ndarray
    hashes: list[str]
    block: int

    def column(self, config_hash: str | None) -> int | None:
        return self.hashes.index(config_hash) if config_hash in self.hashes else None


def _val_losses(rows: pd.DataFrame) -> _Losses | None:
    val = rows[rows["split"] == "val"]
    if val.empty:
        return None
    wide = val.pivot_table(index="origin_index", columns="config_hash", values="mae_pct", aggfunc="first")
    wide = wide.sort_index().dropna(axis=1)
    if wide.empty:
        return None
    return _Losses(wide.to_numpy(float), list(wide.columns), int(val["block_length"].max()))


def _test_line(test: SelectionTest) -> str:
    return test.test if test.test.startswith("none") else f"{test.test}, p={test.p_value:.3f}"


@dataclass(frozen=True)
class Pooled:
    """A model's pooled comparison over every tunable symbol; ``challenger`` is None when it lost."""

    model: str
    best: str | None
    default: str | None
    challenger: str | None
    symbols: int
    test: SelectionTest | None
    outcome: str

    def row(self) -> dict:
        t = self.test
        return {"model": self.model, "best_config_hash": self.best, "default_config_hash": self.default,
                "challenger_config_hash": self.challenger, "symbols": self.symbols,
                "windows": t.windows if t else None, "configs": t.configs if t else None,
                "p_value": t.p_value if t else None, "significant_vs_default": t.significant if t else False,
                "selection_test": t.test if t else None, "outcome": self.outcome}


def pooled_challenger(model: str, rows: pd.DataFrame, defaults: Mapping[str, str], reps: int) -> Pooled:
    """The config best on validation over all tunable symbols' windows together (see the docstring)."""
    per_symbol = {}
    for symbol, group in rows[rows["tunable"]].groupby("symbol"):
        losses = _val_losses(group)
        if losses is not None and defaults.get(symbol):
            per_symbol[symbol] = losses
    if len(per_symbol) < MIN_POOLED_SYMBOLS:
        return Pooled(model, None, None, None, len(per_symbol),
                      None, f"no pooled challenger: {len(per_symbol)} tunable symbol(s), pooling needs "
                            f"{MIN_POOLED_SYMBOLS}")
    common = sorted(set.intersection(*(set(v.hashes) for v in per_symbol.values())))
    default = next(iter({defaults[s] for s in per_symbol}))
    if default not in common:
        return Pooled(model, None, None, None, len(per_symbol), None,
                      "no pooled challenger: the default config is not scored on every symbol")
    depth = max(len(v.losses) for v in per_symbol.values())
    total, count = np.zeros((depth, len(common))), np.zeros((depth, 1))
    for losses in per_symbol.values():
        block = losses.losses[:, [losses.column(h) for h in common]]
        total[depth - len(block):] += block  # aligned on the last validation window
        count[depth - len(block):] += 1
    pooled = total / count
    block = max(v.block for v in per_symbol.values())
    test = selection_test(pooled, common.index(default), block, _seed("pooled", model), reps=reps,
                          confidence_set=False)
    best = common[test.best]
    where = f"over {len(per_symbol)} symbols ({_test_line(test)})"
    if best == default:
        return Pooled(model, best, default, None, len(per_symbol), test,
                      f"no pooled challenger: the default config is best {where}")
    if not test.significant:
        return Pooled(model, best, default, None, len(per_symbol), test,
                      f"no pooled challenger: the pooled best is not significantly better than the default {where}")
    return Pooled(model, best, default, best, len(per_symbol), test,
                  f"pooled challenger: significantly better than the default {where}")


def _names(rows: pd.DataFrame) -> dict[str, str]:
    return dict(zip(rows["config_hash"], rows["config_name"]))


def _own_if_better(best: str, test: SelectionTest, benchmark: str) -> tuple[str, str, str] | None:
    """(config, basis, reason) keeping the symbol's own best when the test shows it beats ``benchmark``."""
    if not test.significant:
        return None
    return best, "own", f"best on validation, significantly better than {benchmark} ({_test_line(test)})"


def decide(symbol: str, model: str, rows: pd.DataFrame, pooled: Pooled, reps: int) -> dict:
    """One (symbol, model)'s selected config and the evidence behind it (a ``decisions`` row)."""
    seconds = rows.groupby("config_hash")["seconds"].mean()
    names = _names(rows)
    defaults = rows.loc[rows["is_default"], "config_hash"]
    default = defaults.iloc[0] if len(defaults) else None
    row = {"symbol": symbol, "model": model, "default_config_hash": default,
           "pooled_outcome": pooled.outcome, "significant_vs_default": False}
    losses = _val_losses(rows) if bool(rows["tunable"].all()) else None
    if losses is None:
        reason = rows["layout_reason"].iloc[0] if not bool(rows["tunable"].all()) else "no validation windows"
        keep = default or seconds.idxmin()
        return {**row, "selected_config_hash": keep, "best_val_config_hash": keep, "selection_basis": "default",
                "selection_test": "none: no validation windows", "selection_reason": reason,
                "pooled_outcome": "not pooled: no validation windows"}
    column = losses.column(default)
    if column is None:
        best = losses.hashes[int(np.argmin(losses.losses.mean(axis=0)))]
        return {**row, "selected_config_hash": best, "best_val_config_hash": best, "selection_basis": "best",
                "selection_test": "none: no default config scored", "configs_tested": len(losses.hashes),
                "windows_tested": len(losses.losses), "block_length": losses.block,
                "selection_reason": "no default config scored: best on validation"}
    seed = _seed(symbol, model)
    vs_default = selection_test(losses.losses, column, losses.block, seed, reps=reps)
    best = losses.hashes[vs_default.best]
    members = [losses.hashes[i] for i in vs_default.confidence_set]
    members.sort(key=lambda h: float(losses.losses[:, losses.column(h)].mean()))
    row.update({"best_val_config_hash": best, "selection_test": vs_default.test,
                "p_value_vs_default": vs_default.p_value, "significant_vs_default": vs_default.significant,
                "configs_tested": vs_default.configs, "windows_tested": vs_default.windows,
                "block_length": vs_default.block_length, "confidence_set_size": len(members),
                "confidence_set": json.dumps([names[h] for h in members])})
    challenger = pooled.challenger if losses.column(pooled.challenger) is not None else None
    if challenger is not None and challenger != default:
        vs_pooled = selection_test(losses.losses, losses.column(challenger), losses.block, seed, reps=reps,
                                   confidence_set=False)
        row.update({"pooled_config_hash": challenger, "p_value_vs_pooled": vs_pooled.p_value,
                    "significant_vs_pooled": vs_pooled.significant})
        if best == challenger:
            chosen, basis, reason = challenger, "pooled", "the pooled challenger is also this symbol's best"
        else:
            chosen, basis, reason = _own_if_better(best, vs_pooled, "the pooled challenger") or (
                challenger, "pooled",
                f"own best not significantly better than the pooled challenger ({_test_line(vs_pooled)}): "
                "pooled config selected")
        row["pooled_outcome"] = f"{pooled.outcome}; {reason}"
    elif best == default:
        chosen, basis, reason = default, "default", "the default config is best on validation"
    else:
        why = ("too few independent validation windows to test against the default"
               if vs_default.test.startswith("none") else
               f"not significantly better than the default ({_test_line(vs_default)})")
        cheaper = seconds[best] <= seconds[default]
        chosen, basis, reason = _own_if_better(best, vs_default, "the default") or (
            (best, "cheaper", f"{why}; best is also cheaper") if cheaper else
            (default, "default", f"{why}; the cheaper default wins"))
    chosen_column = losses.column(chosen)
    row.update({"selected_config_hash": chosen, "selection_basis": basis, "selection_reason": reason,
                "val_diff_vs_default": float(losses.losses[:, chosen_column].mean() - losses.losses[:, column].mean())})
    return row


def choose_model(symbol: str, rows: pd.DataFrame, selected: Mapping[str, str], reps: int) -> dict:
    """Each model's selected config and the random walk against persistence (a ``winner_tests`` row)."""
    reference = rows[rows["model"] == REFERENCE]
    candidates = {m: rows[(rows["model"] == m) & (rows["config_hash"] == h)] for m, h in selected.items()}
    candidates[PROBABILISTIC_REFERENCE] = rows[rows["model"] == PROBABILISTIC_REFERENCE]
    candidates = {m: c for m, c in candidates.items() if not c.empty}
    row = {"symbol": symbol, "candidates": json.dumps(sorted(candidates)), "significant_vs_persistence": False}
    if reference.empty:
        return {**row, "winning_model": None, "selection_test": "none: persistence not scored",
                "choice_reason": "persistence was not scored: run the baseline sweep for this symbol"}
    persistence_hash = reference["config_hash"].iloc[0]
    val = [reference[reference["split"] == "val"].set_index("origin_index")["mae_pct"].rename(REFERENCE)]
    val += [c[c["split"] == "val"].set_index("origin_index")["mae_pct"].rename(m) for m, c in candidates.items()]
    wide = pd.concat(val, axis=1).sort_index().dropna() if not val[0].empty else pd.DataFrame()
    if wide.empty or not bool(rows["tunable"].all()):
        why = rows["layout_reason"].iloc[0] if not bool(rows["tunable"].all()) else "no validation windows"
        return {**row, "winning_model": REFERENCE, "winning_config_hash": persistence_hash,
                "selection_test": "none: no validation windows",
                "choice_reason": f"{why}; no validation windows to show that any model beats persistence"}
    test = selection_test(wide.to_numpy(float), 0, int(rows["block_length"].max()), _seed(symbol, "model choice"),
                          reps=reps, confidence_set=False)
    row.update({"p_value_vs_persistence": test.p_value, "significant_vs_persistence": test.significant,
                "selection_test": test.test})
    best = wide.columns[test.best]
    if test.significant:
        winning_hash = selected.get(best) or candidates[best]["config_hash"].iloc[0]
        return {**row, "winning_model": best, "winning_config_hash": winning_hash,
                "choice_reason": f"lowest validation MAE%, significantly better than persistence ({_test_line(test)})"}
    if test.test.startswith("none"):
        why = "too few independent validation windows to show that any model beats persistence"
    elif best == REFERENCE:
        why = f"persistence has the lowest validation MAE% ({_test_line(test)})"
    else:
        why = f"{best} has the lowest validation MAE% but does not beat persistence significantly ({_test_line(test)})"
    return {**row, "winning_model": REFERENCE, "winning_config_hash": persistence_hash,
            "choice_reason": f"{why}: persistence named"}


def _compare(symbol: str, model: str, mine: pd.DataFrame, theirs: pd.DataFrame, reference: str, metric: str,
             subset: str, origins: set | None, reps: int) -> dict | None:
    pair = pd.concat([mine.set_index("origin_index")[metric].rename("mine"),
                      theirs.set_index("origin_index")[metric].rename("theirs")], axis=1).dropna().sort_index()
    if origins is not None:
        pair = pair[pair.index.isin(origins)]
    if pair.empty:
        return None
    block = int(mine["block_length"].max())
    # one seed per comparison, not per subset: when every test window is out-of-sample both rows agree
    interval = paired_interval((pair["mine"] - pair["theirs"]).to_numpy(), block,
                               _seed(symbol, model, reference, metric), reps=reps)
    return {"symbol": symbol, "model": model, "reference": reference, "metric": metric, "subset": subset,
            "mean_diff": interval.mean_diff, "reference_mean": float(pair["theirs"].mean()),
            "ci_low": interval.ci_low, "ci_high": interval.ci_high, "windows": interval.windows,
            "significantly_better": interval.significantly_better}


def test_comparison_rows(symbol: str, model: str, rows: pd.DataFrame, decision: dict, out_of_sample: set | None,
                     reps: int) -> list[dict]:
    """The selected config on test vs its default and persistence (MAE%) and the random walk (CRPS%),
    over every test window and, where any exist, over the out-of-sample ones alone."""
    test = rows[rows["split"] == "test"]
    mine = test[(test["model"] == model) & (test["config_hash"] == decision["selected_config_hash"])]
    references = [("default", test[(test["model"] == model) & (test["config_hash"] == decision["default_config_hash"])],
                   ("mae_pct", "crps_pct")),
                  (REFERENCE, test[test["model"] == REFERENCE], ("mae_pct",)),
                  (PROBABILISTIC_REFERENCE, test[test["model"] == PROBABILISTIC_REFERENCE], ("crps_pct",))]
    subsets = [("all", None)] + ([("out_of_sample", out_of_sample)] if out_of_sample else [])
    out = []
    for reference, theirs, metrics in references:
        for metric in metrics:
            for subset, origins in subsets:
                if not theirs.empty and not mine.empty:
                    compared = _compare(symbol, model, mine, theirs, reference, metric, subset, origins, reps)
                    if compared:
                        out.append(compared)
    return out


def _pretraining(symbol: str, model: str, rows: pd.DataFrame, cutoff: Cutoff) -> tuple[dict, list[dict], set | None]:
    """The cutoff's summary row, one flag row per window, and the out-of-sample test origins."""
    windows = rows[["split", "origin_index", "window_origin"]].drop_duplicates("origin_index").sort_values("origin_index")
    flags = in_pretraining_period(pd.to_datetime(windows["window_origin"]).to_numpy(), cutoff)
    flag_rows = [{"symbol": symbol, "model": model, "split": s, "origin_index": int(o), "window_origin": t,
                  "in_pretraining_period": None if flags is None else bool(f)}
                 for (s, o, t), f in zip(windows.itertuples(index=False, name=None),
                                         flags if flags is not None else [None] * len(windows))]
    is_test = (windows["split"] == "test").to_numpy()
    oos = None if flags is None else {int(o) for o, f, t in zip(windows["origin_index"], flags, is_test) if t and not f}
    n_test = int(is_test.sum())
    summary = {"symbol": symbol, "model": model, "model_id": cutoff.model_id, "cutoff_known": cutoff.known,
               "seen_through": pd.Timestamp(cutoff.seen_through) if cutoff.seen_through else None,
               "cutoff_kind": cutoff.kind, "cutoff_source": cutoff.source,
               "val_windows_in_pretraining": None if flags is None else int((flags & ~is_test).sum()),
               "test_windows": n_test, "test_windows_out_of_sample": None if oos is None else len(oos),
               "statement": describe(cutoff, n_test, None if oos is None else len(oos))}
    return summary, flag_rows, oos


def selection_tables(trials: pd.DataFrame, cutoffs: Mapping[str, Callable[[str], Cutoff]],
                     reps: int = 1000) -> dict[str, pd.DataFrame]:
    """Every table in :data:`TABLES` from the current evaluation's trial rows (``stg_trials``).

    ``cutoffs`` maps each tuned model to a function giving its pretraining cutoff for a symbol.
    Deterministic: every bootstrap is seeded from the symbol and model names.
    """
    missing = [c for c in TRIAL_COLUMNS if c not in trials.columns]
    if missing:
        raise ValueError(f"trial rows lack columns {missing}; rebuild the dbt staging views (dbt build)")
    trials = trials[TRIAL_COLUMNS].copy()
    trials["is_default"] = trials["is_default"].fillna(False).astype(bool)
    trials["tunable"] = trials["tunable"].fillna(False).astype(bool)
    out: dict[str, list[dict]] = {name: [] for name in TABLES}
    by_symbol = dict(tuple(trials.groupby("symbol")))
    for model in TUNED_MODELS:
        rows = trials[trials["model"] == model]
        defaults = rows[rows["is_default"]].groupby("symbol")["config_hash"].first().to_dict()
        pooled = pooled_challenger(model, rows, defaults, reps)
        out["pooled"].append(pooled.row())
        for symbol, group in rows.groupby("symbol"):
            decision = decide(symbol, model, group, pooled, reps)
            out["decisions"].append(decision)
            summary, flags, oos = _pretraining(symbol, model, group, cutoffs[model](symbol))
            out["pretraining"].append(summary)
            out["pretraining_windows"] += flags
            out["test_comparisons"] += test_comparison_rows(symbol, model, by_symbol[symbol], decision, oos, reps)
    chosen: dict[str, dict[str, str]] = {}
    for decision in out["decisions"]:
        chosen.setdefault(decision["symbol"], {})[decision["model"]] = decision["selected_config_hash"]
    for symbol, group in by_symbol.items():
        out["winner_tests"].append(choose_model(symbol, group, chosen.get(symbol, {}), reps))
    return {name: table(name, rows) for name, rows in out.items()}


"""The last-test-window forecast plot: context tail, actuals and each config's forecast with its band.

Returns a matplotlib ``Figure`` built without pyplot (no global figure state, no display backend), so
the Dagster assets embed it as a PNG and anything else can save or show it.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .backtest import Draw, Trial, last_window_forecast
from .labels import short_label
from .windows import TEST, Windows


def forecast_figure(history: pd.DataFrame, actual: pd.DataFrame, forecasts: Mapping[str, pd.DataFrame],
                    title: str) -> Figure:
    """Context tail (``timestamp``, ``close``), actuals (``timestamp``, ``actual``) and each forecast
    (``timestamp``, ``forecast``, optional ``p10``/``p90`` band) on one axis."""
    fig = Figure(figsize=(9, 4), dpi=90)
    ax = fig.subplots()
    ax.plot(history["timestamp"], history["close"], color="0.6", lw=1, label="context")
    ax.plot(actual["timestamp"], actual["actual"], color="black", lw=1.5, label="actual")
    for name, frame in forecasts.items():
        line, = ax.plot(frame["timestamp"], frame["forecast"], lw=1.2, label=name)
        if "p10" in frame and (frame["p90"] > frame["p10"]).any():
            ax.fill_between(frame["timestamp"], frame["p10"], frame["p90"], color=line.get_color(), alpha=0.15)
    ax.set_title(title)
    # beside the axes, so long config labels never cover the lines (the saved PNG grows to fit)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    fig.autofmt_xdate()
    return fig


def legend_label(model: str, knobs: Mapping) -> str:
    """A config in a plot legend: the model and its knobs in short (a knob-less baseline: its name)."""
    label = short_label(model, knobs)
    return label if label == model else f"{model} {label}"


def last_test_window_figure(prices: pd.DataFrame, windows: Windows, trials: Sequence[Trial],
                            forecast: Callable[[Trial, Windows], Draw], title: str) -> Figure:
    """Each trial's forecast (``forecast(trial, window)``, e.g. :func:`forward.forecast_with`) vs the
    actuals on the last test window, after the three horizons of context before it."""
    last = windows.select(np.flatnonzero(windows.splits == TEST)[-1:])
    forecasts = {legend_label(trial.model, trial.knobs): last_window_forecast(last, forecast(trial, last), trial)
                 for trial in trials}
    origin = int(last.origins[0])
    history = prices.iloc[max(0, origin - 3 * windows.spec.horizon): origin]
    return forecast_figure(history, next(iter(forecasts.values())), forecasts, title)

"""How the ``hpo`` command prints: rich tables within 100 columns on stdout, progress and logs on stderr,
and ``--json`` documents (stdout holds nothing else) drawn from the same records as the tables.

Numbers in tables: MAE% and ratios with 2 decimals, p-values with 3; the JSON keeps full precision.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import contextmanager
from typing import Iterable, Iterator

from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from forecast_core.configs import KINDS

TABLE_WIDTH = 100  # every table fits this many columns
LABEL_WIDTH = 30  # a longer config label wraps inside its cell

SELECTION_LEGEND = (
    "* = the winner: a model is named only where it beats persistence on validation (StepM, 5%); else "
    "persistence is. vs persist.: test MAE% divided by persistence's (below 1 = better). oos/test: "
    "test windows after the model's pretraining cutoff / all test windows. p: SPA p-value that no config "
    "beats the model's default. basis: own (beat the default), pooled (the config pooled over symbols), "
    "cheaper (not significantly better: the cheaper of best and default), default. s: seconds per forecast.")


def stdout_console() -> Console:
    """Results: the terminal's width, or TABLE_WIDTH when stdout is a file or a pipe ($COLUMNS wins)."""
    interactive = sys.stdout.isatty() or "COLUMNS" in os.environ
    return Console(width=None if interactive else TABLE_WIDTH, highlight=False, markup=False)


def stderr_console() -> Console:
    """Progress, logs and errors: never mixed into the results on stdout."""
    return Console(stderr=True, highlight=False, markup=False)


def print_json(document) -> None:
    """One JSON document on stdout (NaN is not JSON: the records carry None instead)."""
    sys.stdout.write(json.dumps(document, indent=2, allow_nan=False, default=str) + "\n")
    sys.stdout.flush()


@contextmanager
def progress() -> Iterator[Progress]:
    """Progress bars on stderr, drawn only when stderr is a terminal; its console prints plain lines."""
    console = stderr_console()
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, disable=not console.is_terminal, redirect_stdout=False, redirect_stderr=False)
    with bar:
        yield bar


def number(value, digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def versus(ratio, better: bool | None) -> Text:
    """A ratio to a reference with its verdict in words (colour only repeats it)."""
    if ratio is None:
        return Text("")
    if better is None:
        return Text(f"{ratio:.2f} ref", style="dim")
    return Text(f"{ratio:.2f} better", style="green") if better else Text(f"{ratio:.2f} worse", style="red")


def _table(*columns: str, numeric: Iterable[str] = (), wrap: Iterable[str] = ("config",)) -> Table:
    """A borderless table, two spaces between columns; only the ``wrap`` columns may wrap."""
    table = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, justify="right" if column in numeric else "left", no_wrap=column not in wrap,
                         max_width=LABEL_WIDTH if column == "config" else None)
    return table


def selection_table(models: list[dict]) -> Table:
    """One symbol's selected config per model and the two baselines, with the evidence for each."""
    table = _table("model", "config", "val\nMAE%", "test\nMAE%", "vs\npersist.", "oos/\ntest", "p", "basis", "s",
                   numeric=("val\nMAE%", "test\nMAE%", "oos/\ntest", "p", "s"))
    for row in models:
        oos = row["test_windows_out_of_sample"]
        table.add_row(row["model"] + (" *" if row["winner"] else ""), row["label"], number(row["val_mae_pct"]),
                      number(row["test_mae_pct"]), versus(row["test_vs_persistence"], row["better_than_persistence"]),
                      f"{oos}/{row['test_windows']}" if oos is not None else "", number(row["p_value_vs_default"], 3),
                      row["selection_basis"] or "", number(row["seconds_per_forecast"]))
    return table


def print_selection(console: Console, report: list[dict]) -> None:
    """Per symbol: its windows, the table, who wins and why, and what the models may have seen."""
    for entry in report:
        layout = entry["layout"]
        console.print(Text(f"\n{entry['symbol']}", style="bold"), Text(
            f"{layout['bars']} bars; {layout['val_windows']} validation + {layout['test_windows']} test windows of "
            f"{layout['horizon']} bars, context {layout['context']}, stride {layout['stride']} "
            f"({layout['layout_reason']})"))
        console.print(selection_table(entry["models"]))
        if entry["winner"]:
            console.print(f"{entry['symbol']}: {entry['winner']} wins: {entry['reason']}")
        for statement in entry["pretraining"]:
            console.print(Padding(statement, (0, 0, 0, 2)))
    console.print(f"\n{SELECTION_LEGEND}", style="dim")


def comparison_table(rows: list[dict]) -> Table:
    table = _table("model", "config", "val MAE%", "test MAE%", "vs persistence", "windows", "s",
                   numeric=("val MAE%", "test MAE%", "windows", "s"))
    for row in rows:
        ratio = row["test_vs_persistence"]
        better = None if row["model"] == "persistence" or ratio is None else ratio < 1
        table.add_row(row["model"], row["label"], number(row["val_mae_pct"]), number(row["test_mae_pct"]),
                      versus(ratio, better), f"{row['val_windows']}/{row['test_windows']}",
                      number(row["seconds"]))
    return table


def forward_table(rows: list[dict]) -> Table:
    """The forward scorecards: each stored config on the windows after its data ended."""
    table = _table("kind", "selected", "windows", "MAE%", "persist.\nMAE%", "vs\npersist.", "diff 95%",
                   "default\nMAE%", "worse\nin a row", numeric=("windows", "MAE%", "persist.\nMAE%",
                                                                "default\nMAE%", "worse\nin a row"))
    for row in rows:
        ratio = row["ratio_to_persistence"]
        low, high = row["ci_low_vs_persistence"], row["ci_high_vs_persistence"]
        table.add_row(row["kind"] + ("" if row["current"] else " (old)"), (row["selected_at"] or "")[:10],
                      str(row["forward_windows"]), number(row["mae_pct"]), number(row["persistence_mae_pct"]),
                      versus(ratio, None if ratio is None else ratio < 1),
                      f"{low:+.2f}..{high:+.2f}" if low is not None and high is not None else "",
                      number(row["default_mae_pct"]), str(row["worse_than_persistence_in_a_row"]))
    return table


def _age(days) -> str:
    return "" if days is None else f"{days:.1f} days ago"


def stored_file_table(entry: dict) -> Table:
    """One config file as field/value lines: what it holds, where it came from, the evidence."""
    grid = Table.grid(padding=(0, 2, 0, 0))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    grid.add_row(entry["kind"], entry.get("label", ""))
    grid.add_row("file", entry["path"])
    if "error" in entry:
        grid.add_row("error", Text(entry["error"], style="red"))
        return grid
    grid.add_row("selected", f"{entry['selected_at']} ({_age(entry['age_days'])})"
                 + (f", on data ending {entry['data_end']}" if entry["data_end"] else "")
                 + (f"; the config of {entry['config_path']}" if entry["config_path"] else ""))
    if entry["model_id"]:
        grid.add_row("weights", f"{entry['model_id']} @ {entry['model_revision']}")
    oos = entry["test_windows_out_of_sample"]
    grid.add_row("MAE%", f"validation {number(entry['val_mae_pct'])} on {entry['val_windows']} windows, test "
                         f"{number(entry['test_mae_pct'])} on {entry['test_windows']}"
                         + (f" ({oos} out-of-sample)" if oos is not None else ""))
    p = f"p={number(entry['p_value'], 3)} vs {entry['p_value_against']}" if entry["p_value"] is not None else ""
    grid.add_row("selection", "; ".join(part for part in (entry["basis"], p, entry["reason"]) if part))
    forward = entry["forward"]
    grid.add_row("forward", "no forward windows yet" if forward is None else
                 f"{forward['forward_windows']} windows: MAE% {number(forward['mae_pct'])} vs persistence "
                 f"{number(forward['persistence_mae_pct'])} (ratio {number(forward['ratio_to_persistence'])}), "
                 f"worse than persistence {forward['worse_than_persistence_in_a_row']} in a row")
    return grid


def status_table(symbols: list[dict]) -> Table:
    table = _table("symbol", "last tune", "files", "state", "why", wrap=("why",))
    for row in symbols:
        when = f"{row['last_tune'][:16]} ({row['last_tune_age_days']:.1f} d)" if row["last_tune"] else "never"
        style = {"current": "green", "stale": "yellow", "drifting": "red"}.get(row["state"], "dim")
        table.add_row(row["symbol"], when, f"{len(row['stored'])}/{len(KINDS)}", Text(row["state"], style=style),
                      row["reason"] or "")
    return table


def failed_runs_table(runs: list[dict]) -> Table:
    table = _table("failed at", "job", "partition", "run", "what failed", wrap=("what failed",))
    for run in runs:
        table.add_row(run["time"][:16], run["job"], run["partition"] or "", run["run_id"][:8], run["message"] or "")
    return table


def automation_table(parts: list[dict]) -> Table:
    table = _table("automation", "kind", "state", "to turn on", wrap=("to turn on",))
    for part in parts:
        state = "on" if part["on"] else "off"
        if part["on"] and not part["daemon_running"]:
            state = "on, no daemon"
        style = "green" if state == "on" else "yellow" if part["on"] else "red"
        table.add_row(part["name"], part["kind"], Text(state, style=style), "" if part["on"] else part["how_to_start"])
    return table

#!/usr/bin/env bash
# The automation drill (README "Automation"; not a test): what a deployment does, at the default sensor
# intervals, timed. In a fresh folder: a CSV feed of one synthetic symbol (DRILL, 1,536 bars: the default
# layout), `hpo tune` at the demo budget, `make automation`, `make daemon`; then the feed appends 320
# bars in which DRILL's price is pinned (persistence is nearly exact, the stored config falls behind),
# and the drill waits for a new hyperparams/best/DRILL.json whose data version moved. Prints the seconds
# from the append to the new file and every run of the instance. About 15 minutes on 2 cores.
#
#   scripts/automation_drill.sh [WORK_DIR]        # default: a new temp folder
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
mkdir -p "$work/csv" "$work/home"
export DAGSTER_HOME="$work/home" HPO_STORAGE_DIR="$work/st" HPO_HYPERPARAMS_DIR="$work/hp"
export HPO_PRICE_SOURCE=csv_dir HPO_CSV_DIR="$work/csv" HPO_TUNE_BUDGET=demo
printf 'telemetry:\n  enabled: false\n' > "$DAGSTER_HOME/dagster.yaml"
python="$repo/.venv/bin/python"
cd "$repo"

"$python" - "$work" <<'PY'
import sys
from pathlib import Path

import numpy as np

from forecast_core.synthetic import make_prices

work, tuned = Path(sys.argv[1]), 1536
prices = make_prices(tuned + 320, seed=21)
after = np.arange(tuned, len(prices))
pinned = prices["close"].iloc[tuned - 1] * np.exp(np.random.default_rng(3).normal(0, 0.001, len(after)))
prices.loc[after, "close"] = pinned
prices.loc[after, "open"] = np.concatenate([[prices["close"].iloc[tuned - 1]], pinned[:-1]])
prices.loc[after, "high"] = prices.loc[after, ["open", "close"]].max(axis=1) * 1.0005
prices.loc[after, "low"] = prices.loc[after, ["open", "close"]].min(axis=1) * 0.9995
prices = prices.drop(columns=["amount"])
prices.to_csv(work / "fed.csv", index=False)
prices.iloc[:tuned].to_csv(work / "csv" / "DRILL.csv", index=False)
PY
data_version() { "$python" -c "import json, sys; print(json.load(open(sys.argv[1]))['metadata']['data_version'])" "$1"; }

echo "$(date +%T) hpo tune --symbol DRILL (demo budget)"
.venv/bin/hpo tune --symbol DRILL > "$work/tune.log" 2>&1
before="$(data_version "$HPO_HYPERPARAMS_DIR/best/DRILL.json")"
make automation > "$work/automation.log" 2>&1
make daemon > "$work/daemon.log" 2>&1 &
daemon=$!
trap 'kill $daemon 2>/dev/null; pkill -f "dagster-daemon run -w workspace.yaml" || true' EXIT
echo "$(date +%T) daemon started; the first price-sensor tick refreshes the unchanged file"
sleep 90
cp "$work/fed.csv" "$work/csv/.DRILL.csv.tmp" && mv "$work/csv/.DRILL.csv.tmp" "$work/csv/DRILL.csv"
appended=$(date +%s)
echo "$(date +%T) the feed appended 320 bars"
until [ "$(data_version "$HPO_HYPERPARAMS_DIR/best/DRILL.json")" != "$before" ]; do
    if [ $(( $(date +%s) - appended )) -gt 2400 ]; then echo "no new config file after 40 minutes"; exit 1; fi
    sleep 5
done
echo "$(date +%T) new hyperparams/best/DRILL.json $(( $(date +%s) - appended )) s after the append"
"$python" - <<'PY'
from datetime import datetime

from dagster import DagsterInstance

for record in reversed(DagsterInstance.get().get_run_records()):
    run = record.dagster_run
    ended = datetime.fromtimestamp(record.end_time).strftime("%T") if record.end_time else "-"
    print(f"  {record.create_timestamp.strftime('%T')}..{ended} {run.job_name} {run.tags.get('dagster/partition', '')} "
          f"{run.status.value} {run.tags.get('retune_trigger', '')}")
PY

"""The UI path: a real `dagster-webserver` on loopback, driven only through its GraphQL API.

What a user does in the UI (add a symbol, materialise prices and the baseline sweep for it, sort the
sweep's leaderboard table, chart its headline numbers in the Plots tab) must work end to end: the webserver loads workspace.yaml, the instance's
DefaultRunLauncher starts the run worker, the code location's multiprocess executor runs the steps.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from forecast_core.sweep.budgets import BASELINE_TRIALS
from tests.support import REPO

pytestmark = pytest.mark.slow
WEBSERVER = str(Path(sys.executable).parent / "dagster-webserver")
LOCATION = "toto_kronos_hpo"  # workspace.yaml
REPOSITORY = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}
SYMBOL = "NVDA"  # embedded price source: no network, no files to prepare

# Runs go straight to the launcher (no daemon here to dequeue them), and never phone home.
DAGSTER_YAML = """\
run_coordinator:
  module: dagster._core.run_coordinator
  class: DefaultRunCoordinator
run_launcher:
  module: dagster
  class: DefaultRunLauncher
telemetry:
  enabled: false
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Webserver:
    """A running `dagster-webserver` process and a tiny GraphQL client for it."""

    def __init__(self, proc: subprocess.Popen, url: str, log: Path):
        self.proc, self.url, self.log = proc, url, log

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def graphql(self, query: str, **variables) -> dict:
        body = json.dumps({"query": query, "variables": variables}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.load(response)
        assert not payload.get("errors"), f"GraphQL errors: {payload['errors']}"
        return payload["data"]

    def wait_until_ready(self, timeout: float) -> None:
        """`/server_info` answers once uvicorn is up; the code location loads after that."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"dagster-webserver exited early:\n{self.log_tail()}"
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=2) as response:
                    info = json.load(response)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.25)
        else:
            raise AssertionError(f"/server_info did not answer in {timeout:.0f} s:\n{self.log_tail()}")
        assert "dagster_webserver_version" in info, info
        while time.monotonic() < deadline:
            entries = self.graphql(LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
            entry = next(e for e in entries if e["name"] == LOCATION)
            if entry["loadStatus"] == "LOADED":
                result = entry["locationOrLoadError"]
                assert result["__typename"] == "RepositoryLocation", f"{LOCATION} failed to load: {result}"
                return
            time.sleep(0.5)
        raise AssertionError(f"code location {LOCATION} not loaded in {timeout:.0f} s:\n{self.log_tail()}")


LOCATION_STATUS = """
query { workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus
  locationOrLoadError { __typename ... on PythonError { message stack } }
} } } }
"""

ADD_PARTITION = """
mutation($repo: RepositorySelector!, $name: String!, $key: String!) {
  addDynamicPartition(repositorySelector: $repo, partitionsDefName: $name, partitionKey: $key) {
    __typename
    ... on AddDynamicPartitionSuccess { partitionKey }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}
"""

LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""

RUN_STATUS = """
query($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status } } }
"""

RUN_FAILURES = """
query($runId: ID!) { logsForRun(runId: $runId) { ... on EventConnection { events {
  __typename
  ... on MessageEvent { message }
  ... on ExecutionStepFailureEvent { stepKey error { message stack } }
  ... on RunFailureEvent { error { message } }
} } } }
"""

MATERIALIZATIONS = """
query($path: [String!]!, $partition: String!) {
  assetOrError(assetKey: {path: $path}) {
    __typename
    ... on Asset { assetMaterializations(partitions: [$partition], limit: 1) {
      runId partition
      metadataEntries {
        label __typename
        ... on MarkdownMetadataEntry { mdStr }
        ... on IntMetadataEntry { intValue }
        ... on FloatMetadataEntry { floatValue }
        ... on TextMetadataEntry { text }
        ... on TableMetadataEntry { table { records schema { columns { name type description } } } }
      }
    } }
  }
}
"""


@pytest.fixture
def webserver(tmp_path):
    """`dagster-webserver -w workspace.yaml` on a free loopback port with its own DAGSTER_HOME and storage."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPO_", "DAGSTER_"))}
    env.update(DAGSTER_HOME=str(home), HPO_STORAGE_DIR=str(tmp_path / "storage"),
               HPO_HYPERPARAMS_DIR=str(tmp_path / "hyperparams"), HPO_PRICE_SOURCE="embedded")
    port = _free_port()
    log = tmp_path / "webserver.log"
    with log.open("w") as out:
        proc = subprocess.Popen([WEBSERVER, "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Webserver(proc, f"http://127.0.0.1:{port}", log)
    try:
        server.wait_until_ready(timeout=120)
        yield server
    finally:
        _stop(server)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(server: Webserver) -> None:
    """SIGTERM, then the server must exit 0 and take its code server (same process group) with it."""
    proc = server.proc
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        code = None
    deadline = time.monotonic() + 30  # the code server drains its RPCs, then exits
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.25)
    leftover = _group_alive(proc.pid)
    if code is None or leftover:
        os.killpg(proc.pid, signal.SIGKILL)  # only the group this fixture started
        proc.wait()
    assert code == 0, f"dagster-webserver exit code {code} after SIGTERM:\n{server.log_tail()}"
    assert not leftover, f"processes of the webserver's group outlived it by 30 s:\n{server.log_tail()}"


def _wait_for_run(server: Webserver, run_id: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = server.graphql(RUN_STATUS, runId=run_id)["runOrError"]["status"]
        if status in ("SUCCESS", "FAILURE", "CANCELED"):
            return status
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} still not finished after {timeout:.0f} s:\n{server.log_tail()}")


def _failure_report(server: Webserver, run_id: str) -> str:
    events = server.graphql(RUN_FAILURES, runId=run_id)["logsForRun"]["events"]
    failed = [e for e in events if e["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent")]
    return json.dumps(failed, indent=1)[-6000:]


def test_materialise_sweep_through_webserver_graphql(webserver):
    added = webserver.graphql(ADD_PARTITION, repo=REPOSITORY, name="symbols", key=SYMBOL)["addDynamicPartition"]
    assert added == {"__typename": "AddDynamicPartitionSuccess", "partitionKey": SYMBOL}, added

    # What "Materialize" on the two selected assets with partition NVDA sends from the UI.
    params = {
        "selector": {**REPOSITORY, "jobName": "__ASSET_JOB",
                     "assetSelection": [{"path": ["price_history"]}, {"path": ["baseline_sweep"]}]},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": SYMBOL}]},
        "runConfigData": {},
    }
    launched = webserver.graphql(LAUNCH_RUN, params=params)["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    status = _wait_for_run(webserver, run_id, timeout=240)
    assert status == "SUCCESS", f"run {run_id} ended {status}:\n{_failure_report(webserver, run_id)}"

    prices = webserver.graphql(MATERIALIZATIONS, path=["price_history"], partition=SYMBOL)["assetOrError"]
    [price_event] = prices["assetMaterializations"]
    price_meta = {e["label"]: e for e in price_event["metadataEntries"]}
    assert price_event["runId"] == run_id and price_event["partition"] == SYMBOL
    assert price_meta["bars"]["intValue"] > 2000 and price_meta["source"]["text"] == "embedded"

    sweep = webserver.graphql(MATERIALIZATIONS, path=["baseline_sweep"], partition=SYMBOL)["assetOrError"]
    assert sweep["__typename"] == "Asset", sweep
    [event] = sweep["assetMaterializations"]
    assert event["runId"] == run_id and event["partition"] == SYMBOL
    meta = {e["label"]: e for e in event["metadataEntries"]}
    _assert_leaderboard_table(meta["leaderboard"])
    _assert_headline_numbers(meta, [json.loads(r) for r in meta["leaderboard"]["table"]["records"]])
    assert meta["last_test_window"]["mdStr"].startswith("![")  # the forecast plot travels as inline PNG


def _assert_leaderboard_table(board: dict) -> None:
    """A sortable table: typed, described columns and one record per baseline, best validation MAE% first."""
    assert board["__typename"] == "TableMetadataEntry", board
    columns = {c["name"]: c for c in board["table"]["schema"]["columns"]}
    assert {"model", "config", "config_name", "val_mae_pct", "test_mae_pct", "val_windows"} <= set(columns), columns
    assert (columns["model"]["type"], columns["val_mae_pct"]["type"], columns["val_windows"]["type"]) == (
        "string", "float", "int")
    assert all(c["description"] for c in columns.values()), columns  # the table header explains each column
    records = [json.loads(r) for r in board["table"]["records"]]
    assert sorted(r["model"] for r in records) == sorted(BASELINE_TRIALS), records
    assert set(records[0]) == set(columns)
    val = [r["val_mae_pct"] for r in records]
    assert all(isinstance(v, float) and v > 0 for v in val) and val == sorted(val), val


def _assert_headline_numbers(meta: dict, records: list[dict]) -> None:
    """Numeric entries (what the Plots tab charts across runs) that agree with the table's rows.

    Both are rounded to 5 significant digits from the same values, so they agree to 1e-4 relative."""
    assert meta["trials_computed"]["__typename"] == "IntMetadataEntry"
    assert meta["trials_computed"]["intValue"] == len(BASELINE_TRIALS) and meta["trials_skipped"]["intValue"] == 0
    by_model = {r["model"]: r for r in records}
    expected = {"best_val_mae_pct": records[0]["val_mae_pct"], "best_test_mae_pct": records[0]["test_mae_pct"],
                **{f"{model}_{split}_mae_pct": by_model[model][f"{split}_mae_pct"]
                   for model in ("persistence", "random_walk") for split in ("val", "test")}}
    for label, value in expected.items():
        assert meta[label]["__typename"] == "FloatMetadataEntry", meta[label]
        assert meta[label]["floatValue"] == pytest.approx(value, rel=1e-4), label
    assert meta["val_windows"]["intValue"] == by_model["persistence"]["val_windows"] > 0

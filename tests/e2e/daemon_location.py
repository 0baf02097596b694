"""The code location tests/e2e/test_daemon.py gives the daemon: the project's definitions (assets, jobs,
schedule, sensors, automation conditions) as they are, with that test's small windows and drift
margin, and each run's steps in the run worker's own process (the production executor forks a
server that imports the code location again: seconds per run, and nothing the automation depends on).
"""

from dagster import Definitions, in_process_executor

# The module, not its `defs`: a code location module may hold only one Definitions at module scope.
from hpo_assets import definitions as project
from resources import BacktestSettings, RetuneSettings
from tests.support import FEED_DRIFT_MARGIN, TINY_BACKTEST

defs = Definitions(
    assets=project.defs.assets,
    asset_checks=project.defs.asset_checks,
    jobs=project.defs.jobs,
    schedules=project.defs.schedules,
    sensors=project.defs.sensors,
    resources={**project.defs.resources, "backtest": BacktestSettings(**TINY_BACKTEST),
               "retune": RetuneSettings(drift_margin=FEED_DRIFT_MARGIN)},
    executor=in_process_executor,
)

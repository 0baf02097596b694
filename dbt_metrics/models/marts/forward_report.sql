-- depends_on: {{ source('forward', 'report') }}
-- Per symbol and stored config file (toto, toto2, kronos, best), each scorecard: the forward windows after its
-- selection so far, forward MAE% and CRPS% of the stored config vs persistence, the model's default and
-- the random walk, the paired block bootstrap interval of the differences (computed with the test
-- report's machinery in forecast_core/forward.py), windows in a row worse than persistence, and the
-- days since selection. `current` marks the scorecard of the file as stored now; older ones are history.
with report as (
    {{ read_parquet_or_empty(env_var('HPO_FORWARD_DIR', '../storage/forward') ~ '/report/*.parquet', [
        'symbol varchar', 'kind varchar', 'scorecard varchar', 'file_model varchar', 'config_name varchar',
        'selected_at varchar', 'data_end timestamp', 'current boolean', 'forward_windows bigint',
        'first_origin timestamp', 'last_origin timestamp', 'mae_pct double', 'crps_pct double',
        'persistence_mae_pct double', 'default_mae_pct double', 'default_crps_pct double',
        'random_walk_crps_pct double',
        'ratio_to_persistence double', 'diff_vs_persistence double', 'ci_low_vs_persistence double',
        'ci_high_vs_persistence double', 'diff_vs_default double', 'ci_low_vs_default double',
        'ci_high_vs_default double', 'worse_than_persistence_in_a_row bigint']) }}
)

select
    symbol || '|' || scorecard as forward_report_key,
    *,
    coalesce(ci_low_vs_persistence > 0, false) as significantly_worse_than_persistence,
    coalesce(ci_high_vs_persistence < 0, false) as significantly_better_than_persistence,
    date_diff('day', cast(selected_at as timestamptz), current_timestamp) as days_since_selection
from report

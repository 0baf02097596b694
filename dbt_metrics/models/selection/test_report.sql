-- The selected configs on the held-out test windows (source selection.test_comparisons) against the
-- model's default config (MAE%, CRPS%), persistence (MAE%) and the random walk (CRPS%: the probabilistic
-- reference), over every test window and over the windows after the model's pretraining cutoff alone. Mean
-- per-window difference (selected - reference, negative = better) with a circular block bootstrap
-- 95% interval (forecast_core.significance.paired_interval). Reported only; never used to choose.
select
    symbol || '|' || model || '|' || reference || '|' || metric || '|' || subset as test_report_key,
    symbol,
    model,
    reference,
    metric,
    subset,
    mean_diff,
    reference_mean,
    mean_diff / nullif(reference_mean, 0) as relative_diff,
    ci_low,
    ci_high,
    windows,
    significantly_better
from {{ source('selection', 'test_comparisons') }}

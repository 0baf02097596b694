-- The selected configs on the held-out test windows, against the model's default config and
-- persistence on the same windows: mean per-window MAE% difference (selected - reference,
-- negative = better) with a paired (block) bootstrap 95% interval. Reported only; never used to choose.
with selected as (
    select symbol, model, config_hash, default_config_hash from {{ ref('best_configs') }}
),

test_rows as (
    select symbol, config_hash, model, origin_index, block_length, mae_pct
    from {{ ref('stg_trials') }}
    where split = 'test'
),

pairs as (
    select s.symbol, s.model, 'default' as reference, t.origin_index, t.block_length, t.mae_pct - r.mae_pct as diff
    from selected as s
    inner join test_rows as t on t.symbol = s.symbol and t.config_hash = s.config_hash
    inner join test_rows as r
        on r.symbol = s.symbol and r.config_hash = s.default_config_hash and r.origin_index = t.origin_index
    union all
    select s.symbol, s.model, 'persistence' as reference, t.origin_index, t.block_length,
        t.mae_pct - r.mae_pct as diff
    from selected as s
    inner join test_rows as t on t.symbol = s.symbol and t.config_hash = s.config_hash
    inner join test_rows as r
        on r.symbol = s.symbol and r.model = 'persistence' and r.origin_index = t.origin_index
)

select
    symbol || '|' || model || '|' || reference as test_report_key,
    symbol,
    model,
    reference,
    mean_diff as test_mae_pct_diff,
    ci_low as test_diff_ci_low,
    ci_high as test_diff_ci_high,
    windows as test_windows,
    coalesce(ci_high < 0, false) as significantly_better
from {{ paired_bootstrap('pairs', ['symbol', 'model', 'reference']) }}

-- The selected config per (symbol, model), chosen on validation only.
-- The best validation config must beat the model's default config with a paired bootstrap 95%
-- interval of the per-window MAE% difference entirely below zero (a circular block bootstrap when
-- windows overlap); otherwise the cheaper of the two (fewer seconds per forecast) is selected and the
-- row says the gain was not significant. A history too short to tune has no validation windows:
-- the default config is kept, and the row carries the layout's reason.
with candidates as (
    select * from {{ ref('leaderboard') }}
    where model not in ('persistence', 'seasonal_naive', 'drift')
),

best as (
    select * from candidates
    qualify row_number() over (
        partition by symbol, model
        order by val_mae_pct nulls last, is_default desc, seconds_per_forecast, config_name
    ) = 1
),

defaults as (
    select * from candidates where is_default
),

val_pairs as (
    select b.symbol, b.model, v.origin_index, v.block_length, v.mae_pct - dv.mae_pct as diff
    from best as b
    inner join defaults as d on d.symbol = b.symbol and d.model = b.model
    inner join {{ ref('stg_trials') }} as v
        on v.symbol = b.symbol and v.config_hash = b.config_hash and v.split = 'val'
    inner join {{ ref('stg_trials') }} as dv
        on dv.symbol = b.symbol and dv.config_hash = d.config_hash and dv.split = 'val'
        and dv.origin_index = v.origin_index
),

interval as (
    select * from {{ paired_bootstrap('val_pairs', ['symbol', 'model']) }}
),

decided as (
    select
        b.symbol,
        b.model,
        b.config_hash as best_val_config_hash,
        d.config_hash as default_config_hash,
        i.mean_diff as val_diff_vs_default,
        i.ci_low as val_diff_ci_low,
        i.ci_high as val_diff_ci_high,
        coalesce(b.tunable and i.ci_high < 0, false) as significant_vs_default,
        case
            when not b.tunable then b.layout_reason
            when d.config_hash is null then 'no default config scored: best on validation'
            when b.config_hash = d.config_hash then 'the default config is best on validation'
            when i.ci_high < 0 then 'best on validation, significantly better than the default'
            when i.ci_high is null and b.seconds_per_forecast <= d.seconds_per_forecast
                then 'too few independent validation windows to test against the default; best is also cheaper'
            when i.ci_high is null
                then 'too few independent validation windows to test against the default; the cheaper default wins'
            when b.seconds_per_forecast <= d.seconds_per_forecast
                then 'not significantly better than the default; best is also cheaper'
            else 'not significantly better than the default; the cheaper default wins'
        end as selection_reason,
        case
            when not b.tunable then coalesce(d.config_hash, b.config_hash)
            when d.config_hash is null or b.config_hash = d.config_hash or i.ci_high < 0 then b.config_hash
            when b.seconds_per_forecast <= d.seconds_per_forecast then b.config_hash
            else d.config_hash
        end as selected_config_hash
    from best as b
    left join defaults as d on d.symbol = b.symbol and d.model = b.model
    left join interval as i on i.symbol = b.symbol and i.model = b.model
)

select
    c.symbol || '|' || c.model as best_config_key,
    c.symbol,
    c.model,
    c.config_name,
    c.config_hash,
    c.config_json,
    c.val_mae_pct,
    c.test_mae_pct,
    c.val_crps_pct,
    c.test_crps_pct,
    c.val_mase,
    c.test_mase,
    c.val_coverage_10_90,
    c.test_coverage_10_90,
    c.val_windows,
    c.test_windows,
    c.seconds_per_forecast,
    c.tunable,
    c.layout_reason,
    c.history_bars,
    c.effective_val_windows,
    c.effective_test_windows,
    c.data_version,
    c.data_end,
    d.best_val_config_hash,
    d.default_config_hash,
    d.val_diff_vs_default,
    d.val_diff_ci_low,
    d.val_diff_ci_high,
    d.significant_vs_default,
    d.selection_reason,
    (select count(*) from candidates as n where n.symbol = c.symbol and n.model = c.model) as configs_scored
from decided as d
inner join candidates as c
    on c.symbol = d.symbol and c.model = d.model and c.config_hash = d.selected_config_hash

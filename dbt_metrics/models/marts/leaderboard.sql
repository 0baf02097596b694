-- Every config of every model per symbol, ranked on validation MAE% only (test is reported,
-- never used to choose), with the test MAE% relative to persistence on the same windows, and the
-- window layout the symbol's history allowed (comparison-only layouts have no validation rows).
with by_config as (
    select
        symbol,
        model,
        config_name,
        config_hash,
        any_value(config_json) as config_json,
        any_value(sweep) as sweep,
        bool_or(is_default) as is_default,
        avg(mae_pct) filter (where split = 'val') as val_mae_pct,
        avg(mae_pct) filter (where split = 'test') as test_mae_pct,
        avg(mase) filter (where split = 'val') as val_mase,
        avg(crps_pct) filter (where split = 'val') as val_crps_pct,
        avg(coverage_10_90) filter (where split = 'val') as val_coverage_10_90,
        avg(mase) filter (where split = 'test') as test_mase,
        avg(crps_pct) filter (where split = 'test') as test_crps_pct,
        avg(coverage_10_90) filter (where split = 'test') as test_coverage_10_90,
        count(*) filter (where split = 'val') as val_windows,
        count(*) filter (where split = 'test') as test_windows,
        avg(seconds) as seconds_per_forecast,
        any_value(horizon) as horizon,
        any_value(stride) as stride,
        any_value(context) as context,
        any_value(history_bars) as history_bars,
        bool_and(tunable) as tunable,
        any_value(layout_reason) as layout_reason,
        any_value(effective_val_windows) as effective_val_windows,
        any_value(effective_test_windows) as effective_test_windows,
        any_value(data_version) as data_version,
        max(data_end) as data_end,
        max(written_at) as written_at
    from {{ ref('stg_trials') }}
    group by symbol, model, config_name, config_hash
),

persistence as (
    select symbol, test_mae_pct as persistence_test_mae_pct
    from by_config
    where model = 'persistence'
)

select
    b.symbol || '|' || b.config_hash as leaderboard_key,
    b.*,
    b.test_mae_pct / nullif(p.persistence_test_mae_pct, 0) as test_vs_persistence,
    rank() over (partition by b.symbol order by b.val_mae_pct asc) as val_rank
from by_config as b
left join persistence as p on b.symbol = p.symbol

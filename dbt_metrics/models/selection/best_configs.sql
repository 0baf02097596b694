-- The selected config per (symbol, model) with its metrics: the decision is made in Python
-- (source selection.decisions: StepM over every config scored, pooled challenger, the cheaper config
-- when nothing is significant; chosen on validation only), with the model's pretraining cutoff and
-- its out-of-sample test windows.
with decisions as (
    select * from {{ source('selection', 'decisions') }}
),

pretraining as (
    select * from {{ source('selection', 'pretraining') }}
)

select
    d.symbol || '|' || d.model as best_config_key,
    d.symbol,
    d.model,
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
    d.pooled_config_hash,
    d.selection_basis,
    d.selection_test,
    d.p_value_vs_default,
    coalesce(d.significant_vs_default, false) as significant_vs_default,
    d.p_value_vs_pooled,
    d.significant_vs_pooled,
    d.pooled_outcome,
    d.val_diff_vs_default,
    d.configs_tested,
    d.windows_tested,
    d.block_length,
    d.confidence_set_size,
    d.confidence_set,
    d.selection_reason,
    p.model_id,
    p.cutoff_known,
    p.seen_through,
    p.cutoff_kind,
    p.test_windows_out_of_sample,
    p.statement as pretraining_statement,
    (select count(*) from {{ ref('leaderboard') }} as n where n.symbol = d.symbol and n.model = d.model)
        as configs_scored
from decisions as d
inner join {{ ref('leaderboard') }} as c
    on c.symbol = d.symbol and c.model = d.model and c.config_hash = d.selected_config_hash
left join pretraining as p on p.symbol = d.symbol and p.model = d.model

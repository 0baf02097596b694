-- depends_on: {{ source('trials', 'baseline') }}
-- One row per (symbol, model, config, window) of each symbol's current evaluation: the data
-- version and window layout of the most recently written trial. Rows of older data versions
-- (before new bars arrived) stay in the Parquet files but do not mix into the marts.
with all_trials as (
    {{ read_trials('baseline') }}
),

keyed as (
    select
        *,
        data_version || '|' || horizon || '|' || n_val || '|' || n_test || '|' || stride || '|' || context
            as evaluation_key
    from all_trials
),

current_evaluation as (
    select symbol, arg_max(evaluation_key, written_at) as evaluation_key
    from keyed
    group by symbol
)

select
    k.symbol,
    k.model,
    k.config_name,
    k.config_json,
    k.config_hash,
    k.symbol || '|' || k.config_hash || '|' || k.split || '|' || k.origin_index as trial_window_key,
    k.split,
    k.window_origin,
    k.origin_index,
    k.seed,
    k.mae,
    k.mae_pct,
    k.mase,
    k.crps_pct,
    k.coverage_10_90,
    k.seconds,
    k.drawn_samples,
    k.sweep,
    k.data_version,
    k.data_end,
    k.model_revision,
    k.horizon,
    k.n_val,
    k.n_test,
    k.stride,
    k.context,
    k.code_version,
    k.run_id,
    k.written_at
from keyed as k
inner join current_evaluation as c
    on k.symbol = c.symbol and k.evaluation_key = c.evaluation_key

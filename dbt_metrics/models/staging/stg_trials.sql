-- depends_on: {{ source('trials', 'baseline') }}
-- depends_on: {{ source('trials', 'toto') }}
-- depends_on: {{ source('trials', 'toto2') }}
-- depends_on: {{ source('trials', 'kronos') }}
-- One row per (symbol, model, config, window) of each symbol's current evaluation: the data
-- version and window layout of the most recently written trial, and per model the most recently
-- used weights revision. Older rows (before new bars arrived, other weights) stay in the Parquet
-- files but do not mix into the marts.
with all_trials as (
    {{ read_trials('baseline') }}
    union all by name
    {{ read_trials('toto') }}
    union all by name
    {{ read_trials('toto2') }}
    union all by name
    {{ read_trials('kronos') }}
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
),

in_evaluation as (
    select k.*
    from keyed as k
    inner join current_evaluation as c
        on k.symbol = c.symbol and k.evaluation_key = c.evaluation_key
),

current_revision as (
    select symbol, model, arg_max(model_revision, written_at) as model_revision
    from in_evaluation
    group by symbol, model
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
    k.draw_seconds,
    k.drawn_samples,
    coalesce(k.is_default, false) as is_default,
    k.sweep,
    k.data_version,
    k.data_end,
    k.model_revision,
    k.horizon,
    k.n_val,
    k.n_test,
    k.stride,
    k.context,
    -- trials written before layouts were recorded used the requested layout on a long enough history
    coalesce(k.tunable, k.n_val > 0) as tunable,
    coalesce(k.layout_reason, 'requested layout') as layout_reason,
    k.history_bars,
    coalesce(k.effective_val_windows, k.n_val::double) as effective_val_windows,
    coalesce(k.effective_test_windows, k.n_test::double) as effective_test_windows,
    -- overlapping windows (stride < horizon) are resampled in blocks that span one horizon
    ceil(k.horizon / k.stride)::bigint as block_length,
    k.code_version,
    k.run_id,
    k.written_at
from in_evaluation as k
inner join current_revision as r
    on k.symbol = r.symbol and k.model = r.model and k.model_revision = r.model_revision

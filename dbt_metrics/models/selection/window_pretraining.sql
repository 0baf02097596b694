-- Per (symbol, model, window): whether the window's target starts on or before the last date the
-- model may have seen in pretraining (null when the model's cutoff is unknown).
select
    symbol || '|' || model || '|' || origin_index as window_pretraining_key,
    symbol,
    model,
    split,
    origin_index,
    window_origin,
    in_pretraining_period
from {{ source('selection', 'pretraining_windows') }}

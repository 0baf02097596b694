-- Configs no other config of the same symbol beats on both validation MAE% and seconds per
-- forecast: the accuracy/latency trade-offs worth considering.
with configs as (
    select symbol, model, config_name, config_hash, val_mae_pct, test_mae_pct, seconds_per_forecast
    from {{ ref('leaderboard') }}
    where model not in ('{{ var("baseline_models") | join("', '") }}') and val_mae_pct is not null
)

select c.symbol || '|' || c.config_hash as pareto_key, c.*
from configs as c
where not exists (
    select 1 from configs as o
    where o.symbol = c.symbol
      and o.val_mae_pct <= c.val_mae_pct
      and o.seconds_per_forecast <= c.seconds_per_forecast
      and (o.val_mae_pct < c.val_mae_pct or o.seconds_per_forecast < c.seconds_per_forecast)
)

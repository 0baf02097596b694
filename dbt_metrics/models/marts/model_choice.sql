-- Which model wins per symbol: the selected config with the lowest validation MAE%. A history too
-- short to tune has no validation windows: the cheaper model's default is named, and the reason says so.
with ranked as (
    select
        *,
        row_number() over (
            partition by symbol order by val_mae_pct nulls last, seconds_per_forecast, model
        ) as val_rank
    from {{ ref('best_configs') }}
),

persistence as (
    select symbol, val_mae_pct as persistence_val_mae_pct, test_mae_pct as persistence_test_mae_pct
    from {{ ref('leaderboard') }}
    where model = 'persistence'
)

select
    r.symbol,
    r.model as winning_model,
    r.config_name,
    r.config_hash,
    r.val_mae_pct,
    r.test_mae_pct,
    case
        when r.tunable then 'lowest validation MAE% among the selected configs'
        else r.layout_reason || '; no validation windows to compare the models on: the cheaper model is named'
    end as choice_reason,
    p.persistence_val_mae_pct,
    p.persistence_test_mae_pct,
    (select count(*) from ranked as o where o.symbol = r.symbol) as models_compared,
    (select min(o.val_mae_pct) from ranked as o where o.symbol = r.symbol and o.val_rank = 2)
        as runner_up_val_mae_pct
from ranked as r
left join persistence as p on p.symbol = r.symbol
where r.val_rank = 1

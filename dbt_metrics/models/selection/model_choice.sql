-- Which model wins per symbol: each model's selected config and the random walk against
-- persistence on validation (source selection.winner_tests). A model is named only when it beats
-- persistence under the selection test; otherwise persistence is, and the reason says why.
with choice as (
    select * from {{ source('selection', 'winner_tests') }}
),

persistence as (
    select symbol, val_mae_pct as persistence_val_mae_pct, test_mae_pct as persistence_test_mae_pct
    from {{ ref('leaderboard') }}
    where model = 'persistence'
),

random_walk as (
    select symbol, test_crps_pct as random_walk_test_crps_pct,
        test_coverage_10_90 as random_walk_test_coverage_10_90
    from {{ ref('leaderboard') }}
    where model = 'random_walk'
)

select
    ch.symbol,
    ch.winning_model,
    ch.winning_model in ('persistence', 'random_walk') as winner_is_baseline,
    w.config_name,
    ch.winning_config_hash as config_hash,
    w.val_mae_pct,
    w.test_mae_pct,
    ch.choice_reason,
    ch.selection_test,
    ch.p_value_vs_persistence,
    ch.significant_vs_persistence,
    ch.candidates,
    p.persistence_val_mae_pct,
    p.persistence_test_mae_pct,
    r.random_walk_test_crps_pct,
    r.random_walk_test_coverage_10_90,
    (select count(*) from {{ ref('best_configs') }} as b where b.symbol = ch.symbol) as models_compared
from choice as ch
left join {{ ref('leaderboard') }} as w on w.symbol = ch.symbol and w.config_hash = ch.winning_config_hash
left join persistence as p on p.symbol = ch.symbol
left join random_walk as r on r.symbol = ch.symbol

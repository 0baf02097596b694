-- Per model: the config best on validation over every tunable symbol's windows together, whether it
-- beat the default there (and so challenges each symbol's own choice), and on how much evidence.
select
    p.model,
    p.best_config_hash,
    b.config_name as best_config_name,
    p.challenger_config_hash,
    p.default_config_hash,
    p.symbols,
    p.windows,
    p.configs,
    p.p_value,
    p.significant_vs_default,
    p.selection_test,
    p.outcome
from {{ source('selection', 'pooled') }} as p
left join (select distinct config_hash, config_name from {{ ref('leaderboard') }}) as b
    on b.config_hash = p.best_config_hash

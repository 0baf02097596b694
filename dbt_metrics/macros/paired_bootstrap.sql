{#- Paired bootstrap over windows: mean of `diff` per group, and its 95% percentile interval.
    `pairs` is a relation with the group columns, origin_index, block_length and diff (one row per
    window). Windows are resampled in circular blocks of block_length consecutive windows (1 when
    targets do not overlap, i.e. the plain bootstrap; ceil(horizon / stride) when they do), so the
    dependence between overlapping windows stays inside a block. Block starts come from
    hash(resample, block, group), so the interval is reproducible. With fewer than two blocks every
    resample is a rotation of the same windows (no spread at all): the interval is null, so nothing
    counts as significant on such evidence. -#}
{% macro paired_bootstrap(pairs, group_by, resamples=2000) %}
  {%- set cols = group_by | join(', ') -%}
  (
    with numbered as (
        select {{ cols }}, diff,
               row_number() over (partition by {{ cols }} order by origin_index) - 1 as i,
               count(*) over (partition by {{ cols }}) as n,
               least(max(block_length) over (partition by {{ cols }}), count(*) over (partition by {{ cols }}))
                   as block
        from {{ pairs }}
    ),
    blocks as (
        select {{ cols }}, n, block, r.b, unnest(range((n + block - 1) // block)) as j
        from (select distinct {{ cols }}, n, block from numbered) as g, range({{ resamples }}) as r(b)
    ),
    draws as (
        select {{ cols }}, n, b, ((hash(b, j{% for c in group_by %}, {{ c }}{% endfor %}) % n + m) % n)::bigint as k
        from (select *, unnest(range(block)) as m from blocks)
        where j * block + m < n
    ),
    resampled as (
        select {% for c in group_by %}d.{{ c }}, {% endfor %}d.b, avg(x.diff) as mean_diff
        from draws as d
        inner join numbered as x
            on {% for c in group_by %}x.{{ c }} = d.{{ c }} and {% endfor %}x.i = d.k
        group by {% for c in group_by %}d.{{ c }}, {% endfor %}d.b
    ),
    observed as (
        select {{ cols }}, avg(diff) as mean_diff, count(*) as windows, max(block_length) as block_length
        from {{ pairs }}
        group by {{ cols }}
    )
    select {% for c in group_by %}o.{{ c }}, {% endfor %}o.mean_diff, o.windows,
           case when o.windows >= 2 * o.block_length then quantile_cont(r.mean_diff, 0.025) end as ci_low,
           case when o.windows >= 2 * o.block_length then quantile_cont(r.mean_diff, 0.975) end as ci_high
    from observed as o
    inner join resampled as r
        on {% for c in group_by %}r.{{ c }} = o.{{ c }}{% if not loop.last %} and {% endif %}{% endfor %}
    group by {% for c in group_by %}o.{{ c }}, {% endfor %}o.mean_diff, o.windows, o.block_length
  )
{% endmacro %}

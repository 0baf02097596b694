{#- Paired bootstrap over windows: mean of `diff` per group, and its 95% percentile interval.
    `pairs` is a relation with the group columns, origin_index and diff (one row per window).
    Resampling indices come from hash(resample, draw, group) so the interval is reproducible. -#}
{% macro paired_bootstrap(pairs, group_by, resamples=2000) %}
  {%- set cols = group_by | join(', ') -%}
  (
    with numbered as (
        select {{ cols }}, diff,
               row_number() over (partition by {{ cols }} order by origin_index) - 1 as i,
               count(*) over (partition by {{ cols }}) as n
        from {{ pairs }}
    ),
    draws as (
        select {{ cols }}, n, r.b, unnest(range(n)) as k
        from (select distinct {{ cols }}, n from numbered) as g, range({{ resamples }}) as r(b)
    ),
    resampled as (
        select {% for c in group_by %}d.{{ c }}, {% endfor %}d.b, avg(x.diff) as mean_diff
        from draws as d
        inner join numbered as x
            on {% for c in group_by %}x.{{ c }} = d.{{ c }} and {% endfor %}
               x.i = hash(d.b, d.k{% for c in group_by %}, d.{{ c }}{% endfor %}) % d.n
        group by {% for c in group_by %}d.{{ c }}, {% endfor %}d.b
    ),
    observed as (
        select {{ cols }}, avg(diff) as mean_diff, count(*) as windows
        from {{ pairs }}
        group by {{ cols }}
    )
    select {% for c in group_by %}o.{{ c }}, {% endfor %}o.mean_diff, o.windows,
           quantile_cont(r.mean_diff, 0.025) as ci_low,
           quantile_cont(r.mean_diff, 0.975) as ci_high
    from observed as o
    inner join resampled as r
        on {% for c in group_by %}r.{{ c }} = o.{{ c }}{% if not loop.last %} and {% endif %}{% endfor %}
    group by {% for c in group_by %}o.{{ c }}, {% endfor %}o.mean_diff, o.windows
  )
{% endmacro %}

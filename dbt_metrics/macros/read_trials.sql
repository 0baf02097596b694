{#- Rows of one sweep's trial Parquet files; an empty, correctly typed relation until a sweep has run,
    so the marts build for any subset of models. -#}
{% macro read_trials(sweep) %}
  {%- set pattern = env_var('HPO_TRIALS_DIR', '../storage/trials') ~ '/sweep=' ~ sweep ~ '/symbol=*/*.parquet' -%}
  {%- set found = 0 -%}
  {%- if execute -%}
    {%- set found = run_query("select count(*) from glob('" ~ pattern ~ "')").columns[0].values()[0] -%}
  {%- endif -%}
  {%- if found > 0 %}
    select * from read_parquet('{{ pattern }}', union_by_name = true, hive_partitioning = false)
  {%- else %}
    select * from (
      select
        null::varchar as symbol, null::varchar as model, null::varchar as config_name,
        null::varchar as config_json, null::varchar as config_hash, null::varchar as split,
        null::timestamp as window_origin, null::bigint as origin_index, null::bigint as seed,
        null::double as mae, null::double as mae_pct, null::double as mase, null::double as crps_pct,
        null::double as coverage_10_90, null::double as seconds, null::double as draw_seconds,
        null::bigint as drawn_samples, null::boolean as is_default,
        null::varchar as sweep, null::varchar as trial_key, null::varchar as data_version,
        null::timestamp as data_end, null::varchar as model_revision, null::bigint as horizon,
        null::bigint as n_val, null::bigint as n_test, null::bigint as stride, null::bigint as context,
        null::bigint as history_bars, null::boolean as tunable, null::varchar as layout_reason,
        null::double as effective_val_windows, null::double as effective_test_windows,
        null::varchar as code_version, null::varchar as run_id, null::timestamp as written_at
    ) where false
  {%- endif %}
{% endmacro %}

{#- Rows of the Parquet files matching `pattern`, or an empty relation with `columns` ("name type"
    strings) until a file exists, so the marts build before the first file is written. -#}
{% macro read_parquet_or_empty(pattern, columns) %}
  {%- set found = 0 -%}
  {%- if execute -%}
    {%- set found = run_query("select count(*) from glob('" ~ pattern ~ "')").columns[0].values()[0] -%}
  {%- endif -%}
  {%- if found > 0 %}
    select * from read_parquet('{{ pattern }}', union_by_name = true, hive_partitioning = false)
  {%- else %}
    select * from (select {% for column in columns %}null::{{ column.split(' ')[1] }} as {{ column.split(' ')[0] }}{% if not loop.last %}, {% endif %}{% endfor %}) where false
  {%- endif %}
{% endmacro %}

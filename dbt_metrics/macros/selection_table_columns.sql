{#- No rows, the columns and types of the selection statistics table `table` (its Parquet file, at the
    external_location of the sources in models/selection/sources.yml): what unit tests build their given
    rows on with `union all by name`, since dbt cannot read the columns of an external source itself. -#}
{% macro selection_table_columns(table) %}
  select * from read_parquet('{{ env_var("HPO_SELECTION_DIR", "../storage/selection") }}/{{ table }}.parquet') where false
{% endmacro %}

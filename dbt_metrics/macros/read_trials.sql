{#- Rows of one sweep's trial Parquet files; an empty, correctly typed relation until a sweep has run,
    so the marts build for any subset of models. -#}
{% macro read_trials(sweep) %}
  {{ read_parquet_or_empty(env_var('HPO_TRIALS_DIR', '../storage/trials') ~ '/sweep=' ~ sweep ~ '/symbol=*/*.parquet', [
      'symbol varchar', 'model varchar', 'config_name varchar', 'config_json varchar', 'config_hash varchar',
      'split varchar', 'window_origin timestamp', 'origin_index bigint', 'seed bigint', 'mae double',
      'mae_pct double', 'mase double', 'crps_pct double', 'coverage_10_90 double', 'seconds double',
      'draw_seconds double', 'drawn_samples bigint', 'is_default boolean', 'sweep varchar', 'trial_key varchar',
      'data_version varchar', 'data_end timestamp', 'model_revision varchar', 'horizon bigint', 'n_val bigint',
      'n_test bigint', 'stride bigint', 'context bigint', 'history_bars bigint', 'tunable boolean',
      'layout_reason varchar', 'effective_val_windows double', 'effective_test_windows double',
      'code_version varchar', 'run_id varchar', 'written_at timestamp']) }}
{% endmacro %}

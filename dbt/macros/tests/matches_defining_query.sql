{#-
  A generic test for stream table models: fails with one row per difference between the
  table and its defining query evaluated at the table's frontier snapshot (pgtrickle's
  verify_stream_table). In a schema.yml:

    models:
      - name: event_summary
        data_tests:
          - ducklake_streams.matches_defining_query
-#}
{% test matches_defining_query(model) %}
  select difference, row_data
  from pgtrickle.verify_stream_table({{ ducklake_streams.sql_literal(ducklake_streams.stream_table_name(model)) }})
{% endtest %}

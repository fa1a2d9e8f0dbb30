{#-
  Create the foreign tables for a lake schema, skipping those that already exist:
    dbt run-operation import_lake_schema --args '{server: lake, into: lake}'
  (lake_schema defaults to main). Declare them as a dbt source with schema `into`.
-#}
{% macro import_lake_schema(server, into, lake_schema='main') %}
  {% set existing = run_query(
      "select coalesce(string_agg(format('%I', c.relname), ', '), '') from pg_class c "
      ~ "join pg_namespace n on n.oid = c.relnamespace where c.relkind = 'f' and n.nspname = "
      ~ ducklake_streams.sql_literal(into)).columns[0].values()[0] %}
  {% do run_query("create schema if not exists " ~ adapter.quote(into)) %}
  {% do run_query("import foreign schema " ~ adapter.quote(lake_schema)
                  ~ (" except (" ~ existing ~ ")" if existing else "")
                  ~ " from server " ~ adapter.quote(server) ~ " into " ~ adapter.quote(into)) %}
  {{ log("imported lake schema " ~ lake_schema ~ " of server " ~ server ~ " into " ~ into, info=true) }}
{% endmacro %}

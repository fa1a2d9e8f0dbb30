{#-
  dbt run-operation refresh_stream_table --args '{name: event_summary}'            (DIFFERENTIAL)
  dbt run-operation refresh_stream_table --args '{name: event_summary, mode: FULL}'
  dbt run-operation refresh_all_stream_tables [--args '{mode: FULL}']
  `name` is a stream table (schema-qualified or found on the search_path) or a model name.
-#}
{% macro refresh_stream_table(name, mode='DIFFERENTIAL') %}
  {% set target = ducklake_streams.resolve_stream_table(name) %}
  {% do run_query("select pgtrickle.refresh(" ~ ducklake_streams.sql_literal(target) ~ ", "
                  ~ ducklake_streams.sql_literal(mode | upper) ~ ")") %}
  {{ log("refreshed " ~ target ~ " (" ~ (mode | upper) ~ ")", info=true) }}
{% endmacro %}

{#- Every stream table the current role owns, in creation order. -#}
{% macro refresh_all_stream_tables(mode='DIFFERENTIAL') %}
  {% set names = run_query("select format('%I.%I', pgt_schema, pgt_name) from pgtrickle.pgt_stream_tables order by pgt_id")
                 .columns[0].values() %}
  {% for target in names %}
    {% do run_query("select pgtrickle.refresh(" ~ ducklake_streams.sql_literal(target) ~ ", "
                    ~ ducklake_streams.sql_literal(mode | upper) ~ ")") %}
    {{ log("refreshed " ~ target ~ " (" ~ (mode | upper) ~ ")", info=true) }}
  {% endfor %}
{% endmacro %}

{#- A model name becomes its relation (schema.name); anything else is passed to pgtrickle as is. -#}
{% macro resolve_stream_table(name) %}
  {% for node in graph.nodes.values() %}
    {% if node.resource_type == 'model' and node.name == name %}
      {{ return(node.schema ~ '.' ~ node.alias) }}
    {% endif %}
  {% endfor %}
  {{ return(name) }}
{% endmacro %}

{#-
  dbt run-operation pause_stream_tables                                   (all)
  dbt run-operation pause_stream_tables --args '{names: [event_summary]}'
  dbt run-operation resume_stream_tables [--args '{names: [...]}']
  Pausing is persistent (it survives restarts); resuming replays from each table's frontier.
-#}
{% macro pause_stream_tables(names=none) %}
  {% do run_query("select pgtrickle.pause_scheduler(" ~ ducklake_streams.stream_table_array(names) ~ ")") %}
  {{ log("paused " ~ (names | join(', ') if names else 'all stream tables'), info=true) }}
{% endmacro %}

{% macro resume_stream_tables(names=none) %}
  {% do run_query("select pgtrickle.resume_scheduler(" ~ ducklake_streams.stream_table_array(names) ~ ")") %}
  {{ log("resumed " ~ (names | join(', ') if names else 'all stream tables'), info=true) }}
{% endmacro %}

{#- NULL (every stream table) or a text[] of resolved names. -#}
{% macro stream_table_array(names) %}
  {%- if names is none -%}
    {{ return('null') }}
  {%- endif -%}
  {%- if names is string -%}
    {%- set names = [names] -%}
  {%- endif -%}
  {%- set literals = [] -%}
  {%- for name in names -%}
    {%- do literals.append(ducklake_streams.sql_literal(ducklake_streams.resolve_stream_table(name))) -%}
  {%- endfor -%}
  {{ return('array[' ~ (literals | join(', ')) ~ ']::text[]') }}
{% endmacro %}

{#- A SQL string literal (standard_conforming_strings, PostgreSQL's default since 9.1). -#}
{% macro sql_literal(text) -%}
  '{{ text | replace("'", "''") }}'
{%- endmacro %}

{#- schema.name of a relation, quoted, without the database: the form pgtrickle resolves. -#}
{% macro stream_table_name(relation) -%}
  {{ relation.include(database=false) }}
{%- endmacro %}

{#- The pgtrickle catalog row of `relation` (a dict), or none when it is no stream table. -#}
{% macro get_stream_table(relation) %}
  {% set query %}
    select defining_query, schedule, refresh_mode, status
    from pgtrickle.pgt_stream_tables
    where pgt_relid = to_regclass({{ ducklake_streams.sql_literal(ducklake_streams.stream_table_name(relation)) }})
  {% endset %}
  {% set rows = run_query(query).rows %}
  {% if rows | length == 0 %}
    {{ return(none) }}
  {% endif %}
  {{ return({'query': rows[0][0], 'schedule': rows[0][1], 'refresh_mode': rows[0][2], 'status': rows[0][3]}) }}
{% endmacro %}

{#- The relation's oid, to notice when a statement recreated it. -#}
{% macro relation_oid(relation) %}
  {% set rows = run_query("select to_regclass(" ~ ducklake_streams.sql_literal(ducklake_streams.stream_table_name(relation)) ~ ")::oid").rows %}
  {{ return(rows[0][0]) }}
{% endmacro %}

{#-
  materialized='stream_table': the model's SELECT kept current by ducklake_ivm.

    {{ config(materialized='stream_table', schedule='5s', refresh_mode='DIFFERENTIAL') }}
    select event_type, count(*) as event_count from {{ source('lake', 'events') }} group by event_type

  - first run: pgtrickle.create_stream_table (populated at the lake's current snapshot);
  - unchanged SQL and config: nothing is rebuilt (the scheduler keeps the table current);
  - changed SQL or refresh_mode: pgtrickle.alter_stream_table rebuilds it with the new
    query (a query with other columns recreates the table, dropping the views on it, which
    dbt rebuilds when they are models of the same run); changed schedule: altered in place;
  - --full-refresh: rebuilt from the lake's current snapshot, in place;
  - an existing table or view that is not a stream table is replaced.
-#}
{% materialization stream_table, adapter='postgres' %}
  {%- set target_relation = this.incorporate(type='table') -%}
  {%- set name = ducklake_streams.stream_table_name(target_relation) -%}
  {%- set schedule = config.get('schedule', '1s') -%}
  {%- set refresh_mode = (config.get('refresh_mode', 'DIFFERENTIAL') | upper) -%}
  {%- set query = sql | trim -%}
  {%- set existing_relation = load_cached_relation(this) -%}

  {{ run_hooks(pre_hooks, inside_transaction=False) }}
  {{ run_hooks(pre_hooks, inside_transaction=True) }}

  {%- set stream_table = ducklake_streams.get_stream_table(target_relation) if existing_relation is not none else none -%}
  {%- set name_literal = ducklake_streams.sql_literal(name) -%}
  {%- set schedule_literal = ducklake_streams.sql_literal(schedule) -%}
  {%- set altering_query = stream_table is not none
        and (stream_table.query != query or stream_table.refresh_mode != refresh_mode) -%}
  {%- if stream_table is none -%}
    {%- if existing_relation is not none -%}
      {{ adapter.drop_relation(existing_relation) }}
    {%- endif -%}
    {%- set action -%}
      select pgtrickle.create_stream_table({{ name_literal }}, {{ ducklake_streams.sql_literal(query) }},
        schedule => {{ schedule_literal }}, refresh_mode => {{ ducklake_streams.sql_literal(refresh_mode) }})
    {%- endset -%}
  {%- elif altering_query -%}
    {%- set action -%}
      select pgtrickle.alter_stream_table({{ name_literal }}, query => {{ ducklake_streams.sql_literal(query) }},
        schedule => {{ schedule_literal }}, refresh_mode => {{ ducklake_streams.sql_literal(refresh_mode) }},
        cascade => true)
    {%- endset -%}
  {%- elif should_full_refresh() -%}
    {%- set action -%}
      {%- if stream_table.schedule != schedule %}
      select pgtrickle.alter_stream_table({{ name_literal }}, schedule => {{ schedule_literal }});
      {%- endif %}
      update pgtrickle.pgt_stream_tables set frontier = '{"sources": {}}'
      where pgt_relid = to_regclass({{ name_literal }});
      select pgtrickle.refresh({{ name_literal }}, 'FULL')
    {%- endset -%}
  {%- elif stream_table.schedule != schedule -%}
    {%- set action -%}
      select pgtrickle.alter_stream_table({{ name_literal }}, schedule => {{ schedule_literal }})
    {%- endset -%}
  {%- else -%}
    {%- set action -%}
      select {{ ducklake_streams.sql_literal('stream table ' ~ name ~ ' is up to date with its model') }}
    {%- endset -%}
  {%- endif -%}

  {#- Only a new query can recreate the result table (when its columns change). -#}
  {%- set relid_before = ducklake_streams.relation_oid(target_relation) if altering_query else none -%}
  {% call statement('main') -%}
    {{ action }}
  {%- endcall %}
  {%- if relid_before is not none and ducklake_streams.relation_oid(target_relation) != relid_before -%}
    {#- The result table was recreated, and the views on it dropped: dbt's relation cache
        must forget them, so downstream view models create them again. -#}
    {% do adapter.cache_dropped(target_relation) %}
    {% do adapter.cache_added(target_relation) %}
  {%- endif %}

  {% do apply_grants(target_relation, config.get('grants'), should_revoke=(stream_table is not none)) %}
  {% do persist_docs(target_relation, model) %}

  {{ run_hooks(post_hooks, inside_transaction=True) }}
  {{ adapter.commit() }}
  {{ run_hooks(post_hooks, inside_transaction=False) }}

  {{ return({'relations': [target_relation]}) }}
{% endmaterialization %}

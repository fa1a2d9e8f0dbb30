{{ config(materialized='view') }}

-- A view on the stream table: always as current as the stream table itself.
select event_type,
       event_count,
       total_value,
       round(100.0 * event_count / sum(event_count) over (), 2) as pct_of_events
from {{ ref('event_summary') }}

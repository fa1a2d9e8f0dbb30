{{ config(materialized='table') }}

-- A table built from the stream table: current as of the last `dbt run`.
select event_type, total_value
from {{ ref('event_summary') }}
order by total_value desc, event_type
limit 1

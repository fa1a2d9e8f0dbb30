{{ config(materialized='stream_table', schedule='5s', refresh_mode='DIFFERENTIAL') }}

select event_type,
       count(*) as event_count,
       sum(value) as total_value
from {{ source('lake', 'events') }}
group by event_type

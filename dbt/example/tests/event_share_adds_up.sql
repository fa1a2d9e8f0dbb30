-- A singular test: the shares of the view on the stream table add up to 100%.
select sum(pct_of_events) as total_pct
from {{ ref('event_share') }}
having count(*) > 0 and abs(sum(pct_of_events) - 100) > 0.1

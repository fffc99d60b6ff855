-- No facility owes less than nothing or lends nothing, in silver or in the marts built on it
-- (PostgreSQL checks the same; a row here means the pipeline changed a value on the way).
select 'silver.facilities' as relation, facility_id as id, outstanding_balance as amount
from {{ ref('facilities') }}
where outstanding_balance < 0 or principal_amount <= 0

union all

select 'gold.facility_performance', facility_id, outstanding_balance
from {{ ref('facility_performance') }}
where outstanding_balance < 0

union all

select 'gold.customer_metrics', customer_id, total_outstanding
from {{ ref('customer_metrics') }}
where total_outstanding < 0

union all

select 'silver.transactions', transaction_id, amount
from {{ ref('transactions') }}
where amount <= 0

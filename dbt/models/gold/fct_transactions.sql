-- Every live transaction, with its month; the base of the disbursal and payment facts and the summary.
select
    transaction_id,
    facility_id,
    customer_id,
    transaction_type,
    amount,
    currency,
    currency != 'USD' as is_foreign_currency,
    -- analytics only: silver keeps the exact unconstrained NUMERIC
    {{ cdcflow.to_float('exchange_rate') }} as exchange_rate,
    booked_at,
    value_date,
    {{ cdcflow.month_of('value_date') }} as value_month,
    reference
from {{ ref('transactions') }}

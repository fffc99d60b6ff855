-- Payments per value month and currency, by the customer's type and the facility's status as they were when each
-- payment was written: the enricher's join as of the payment's LSN (silver.enriched__transactions), not the
-- customer and facility as they are now. A side the enricher did not join groups under NULL.
with payments as (
    select
        {{ cdcflow.month_of('value_date') }} as value_month,
        currency,
        customer_type,
        facility_status,
        amount,
        case when customer_join = 'joined' and facility_join = 'joined' then 0 else 1 end as is_unjoined
    from {{ ref('enriched__transactions') }}
    where transaction_type = 'PAYMENT'
)

select
    value_month,
    currency,
    customer_type,
    facility_status,
    count(*) as payment_count,
    sum(amount) as paid_amount,
    sum(is_unjoined) as unjoined_payment_count
from payments
group by value_month, currency, customer_type, facility_status

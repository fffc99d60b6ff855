-- Money lent out: one row per DISBURSAL transaction, with its facility's type.
select
    t.transaction_id,
    t.facility_id,
    t.customer_id,
    f.facility_type,
    t.amount,
    t.currency,
    t.booked_at,
    t.value_date,
    t.value_month
from {{ ref('fct_transactions') }} as t
left join {{ ref('facilities') }} as f on f.facility_id = t.facility_id
where t.transaction_type = 'DISBURSAL'

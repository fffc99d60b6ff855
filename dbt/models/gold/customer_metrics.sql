-- Per customer: the facilities held (count, principal, outstanding, dates) and transaction activity.
with facilities as (
    select
        customer_id,
        count(*) as facility_count,
        sum(case when status = 'ACTIVE' then 1 else 0 end) as active_facility_count,
        sum(case when status = 'DEFAULTED' then 1 else 0 end) as defaulted_facility_count,
        sum(principal_amount) as total_principal,
        sum(outstanding_balance) as total_outstanding,
        min(originated_on) as first_facility_on,
        max(originated_on) as last_facility_on
    from {{ ref('facilities') }}
    group by customer_id
),

activity as (
    select
        customer_id,
        count(*) as transaction_count,
        max(booked_at) as last_transaction_at
    from {{ ref('fct_transactions') }}
    group by customer_id
)

select
    c.customer_id,
    c.status,
    c.customer_type,
    coalesce(f.facility_count, 0) as facility_count,
    coalesce(f.active_facility_count, 0) as active_facility_count,
    coalesce(f.defaulted_facility_count, 0) as defaulted_facility_count,
    coalesce(f.total_principal, 0) as total_principal,
    coalesce(f.total_outstanding, 0) as total_outstanding,
    f.first_facility_on,
    f.last_facility_on,
    coalesce(a.transaction_count, 0) as transaction_count,
    a.last_transaction_at,
    coalesce(f.facility_count, 0) > 0 as has_facilities
from {{ ref('dim_customers') }} as c
left join facilities as f on f.customer_id = c.customer_id
left join activity as a on a.customer_id = c.customer_id

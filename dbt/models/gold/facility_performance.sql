-- Per facility: how much of it is drawn and repaid, and how close it is to maturity.
with flows as (
    select
        facility_id,
        sum(case when transaction_type = 'DISBURSAL' then amount else 0 end) as disbursed_amount,
        sum(case when transaction_type = 'PAYMENT' then amount else 0 end) as paid_amount,
        sum(case when transaction_type = 'PAYMENT' then 1 else 0 end) as payment_count,
        max(case when transaction_type = 'PAYMENT' then value_date end) as last_payment_on
    from {{ ref('fct_transactions') }}
    where facility_id is not null
    group by facility_id
)

select
    f.facility_id,
    f.customer_id,
    f.facility_type,
    f.status,
    f.principal_amount,
    f.outstanding_balance,
    f.interest_rate,
    f.originated_on,
    f.maturity_date,
    coalesce(x.disbursed_amount, 0) as disbursed_amount,
    coalesce(x.paid_amount, 0) as paid_amount,
    coalesce(x.payment_count, 0) as payment_count,
    x.last_payment_on,
    {{ cdcflow.to_float('f.outstanding_balance') }} / {{ cdcflow.to_float('f.principal_amount') }} as utilisation_ratio,
    {{ cdcflow.days_between('cast(' ~ dbt.current_timestamp() ~ ' as date)', 'f.maturity_date') }} as days_to_maturity,
    f.maturity_date < cast({{ dbt.current_timestamp() }} as date) as is_matured,
    f.status = 'DEFAULTED' as is_defaulted
from {{ ref('facilities') }} as f
left join flows as x on x.facility_id = f.facility_id

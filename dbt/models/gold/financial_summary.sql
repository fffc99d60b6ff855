-- Monthly flows per currency (amounts of different currencies are never added together).
select
    value_month,
    currency,
    sum(case when transaction_type = 'DEPOSIT' then amount else 0 end) as deposits,
    sum(case when transaction_type = 'WITHDRAWAL' then amount else 0 end) as withdrawals,
    sum(case when transaction_type = 'DISBURSAL' then amount else 0 end) as disbursals,
    sum(case when transaction_type = 'PAYMENT' then amount else 0 end) as payments,
    sum(case when transaction_type = 'DEPOSIT' then amount else 0 end)
    - sum(case when transaction_type = 'WITHDRAWAL' then amount else 0 end) as net_deposits,
    sum(case when transaction_type = 'DISBURSAL' then amount else 0 end)
    - sum(case when transaction_type = 'PAYMENT' then amount else 0 end) as net_lending,
    count(*) as transaction_count
from {{ ref('fct_transactions') }}
group by value_month, currency

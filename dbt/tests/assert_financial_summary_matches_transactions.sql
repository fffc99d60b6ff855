-- The monthly summary adds up to the transactions it summarises, per currency and type.
with summary as (
    select
        currency,
        sum(deposits) as deposits,
        sum(withdrawals) as withdrawals,
        sum(disbursals) as disbursals,
        sum(payments) as payments,
        sum(transaction_count) as transaction_count
    from {{ ref('financial_summary') }}
    group by currency
),

facts as (
    select
        currency,
        sum(case when transaction_type = 'DEPOSIT' then amount else 0 end) as deposits,
        sum(case when transaction_type = 'WITHDRAWAL' then amount else 0 end) as withdrawals,
        sum(case when transaction_type = 'DISBURSAL' then amount else 0 end) as disbursals,
        sum(case when transaction_type = 'PAYMENT' then amount else 0 end) as payments,
        count(*) as transaction_count
    from {{ ref('fct_transactions') }}
    group by currency
)

select coalesce(s.currency, f.currency) as currency
from summary as s
full outer join facts as f on f.currency = s.currency
where s.currency is null
   or f.currency is null
   or s.deposits != f.deposits
   or s.withdrawals != f.withdrawals
   or s.disbursals != f.disbursals
   or s.payments != f.payments
   or s.transaction_count != f.transaction_count

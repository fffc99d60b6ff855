-- One row per live customer, with the attributes marts filter and group by.
select
    customer_id,
    external_ref,
    full_name,
    email,
    status,
    customer_type,
    date_of_birth,
    credit_limit,
    {{ cdcflow.json_text('profile', '$.sector') }} as sector,
    {{ dbt.safe_cast(cdcflow.json_text('profile', '$.score'), dbt.type_int()) }} as credit_score,
    status = 'ACTIVE' as is_active,
    customer_type = 'BUSINESS' as is_business,
    created_at,
    updated_at
from {{ ref('customers') }}

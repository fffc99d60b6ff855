-- A documented risk score per customer: the exposure-weighted facility scores; see _models.yml.
with exposure as (
    select
        r.customer_id,
        sum({{ cdcflow.to_float('p.outstanding_balance') }} * r.risk_score) as weighted_score,
        sum({{ cdcflow.to_float('p.outstanding_balance') }}) as outstanding,
        max(case when p.is_defaulted then 1 else 0 end) as has_default,
        max(r.risk_score) as worst_facility_score
    from {{ ref('facility_risk_scores') }} as r
    inner join {{ ref('facility_performance') }} as p on p.facility_id = r.facility_id
    group by r.customer_id
),

scored as (
    select
        c.customer_id,
        coalesce(e.outstanding, 0) as outstanding_exposure,
        e.worst_facility_score,
        case
            when coalesce(e.outstanding, 0) > 0
                then least(100.0, e.weighted_score / e.outstanding + 10 * e.has_default)
            when e.has_default = 1 then 100.0
            when c.status = 'SUSPENDED' then 25.0
            else 0.0
        end as score
    from {{ ref('dim_customers') }} as c
    left join exposure as e on e.customer_id = c.customer_id
)

select
    customer_id,
    outstanding_exposure,
    worst_facility_score,
    round(score, 2) as risk_score,
    case when score >= 60 then 'HIGH' when score >= 30 then 'MEDIUM' else 'LOW' end as risk_band
from scored

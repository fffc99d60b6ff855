-- A documented, deliberately simple risk score per facility: 0 (no risk) to 100; see _models.yml.
with parts as (
    select
        p.facility_id,
        p.customer_id,
        p.status,
        p.outstanding_balance,
        p.utilisation_ratio,
        40 * least(p.utilisation_ratio, 1.5) / 1.5 as utilisation_points,
        20 * least({{ cdcflow.to_float('p.interest_rate') }} / 20, 1.0) as rate_points,
        case
            when p.is_matured and p.outstanding_balance > 0 then 25
            when p.days_to_maturity <= 90 and p.utilisation_ratio > 0.5 then 10
            else 0
        end as maturity_points,
        case c.status when 'SUSPENDED' then 15 when 'INACTIVE' then 5 else 0 end as customer_points
    from {{ ref('facility_performance') }} as p
    left join {{ ref('dim_customers') }} as c on c.customer_id = p.customer_id
),

scored as (
    select
        *,
        case
            when status = 'DEFAULTED' then 100.0
            when status = 'CLOSED' and outstanding_balance = 0 then 0.0
            else least(100.0, utilisation_points + rate_points + maturity_points + customer_points)
        end as score
    from parts
)

select
    facility_id,
    customer_id,
    round(utilisation_points, 2) as utilisation_points,
    round(rate_points, 2) as rate_points,
    maturity_points,
    customer_points,
    round(score, 2) as risk_score,
    case when score >= 60 then 'HIGH' when score >= 30 then 'MEDIUM' else 'LOW' end as risk_band
from scored

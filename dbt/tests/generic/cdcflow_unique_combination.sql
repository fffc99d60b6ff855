{#- No two rows share the values of `columns` (a composite key). -#}
{% test cdcflow_unique_combination(model, columns) %}

select
    {%- for column in columns %}
    {{ adapter.quote(column) }},
    {%- endfor %}
    count(*) as rows_with_these_values
from {{ model }}
group by
    {%- for column in columns %}
    {{ adapter.quote(column) }}{{ ',' if not loop.last }}
    {%- endfor %}
having count(*) > 1

{% endtest %}

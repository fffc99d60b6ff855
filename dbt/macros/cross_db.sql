{#- Warehouse-specific SQL, one dispatched macro per idea: a `duckdb__` and a `bigquery__` variant each. -#}

{#- True when the array `list_expr` holds the string `value` (NULL array: false or NULL, never true). -#}
{% macro list_contains(list_expr, value) -%}
    {{ return(adapter.dispatch('list_contains', 'cdcflow')(list_expr, value)) }}
{%- endmacro %}

{% macro duckdb__list_contains(list_expr, value) -%}
    list_contains({{ list_expr }}, '{{ value }}')
{%- endmacro %}

{% macro bigquery__list_contains(list_expr, value) -%}
    ('{{ value }}' in unnest({{ list_expr }}))
{%- endmacro %}


{#- An unconstrained NUMERIC from bronze, exact.
    BigQuery: bronze holds BIGNUMERIC, kept as is.
    DuckDB: DECIMAL stops at 38 digits, so bronze holds the exact text of the lake's decimal(76, 38), which
    Arrow writes with all 38 fraction digits ('1.50000…') and, below 1e-6, in scientific notation
    ('1.00000000E-30', '0E-38'). Silver keeps text (a cast to DECIMAL(38, s) or DOUBLE would round) in one
    canonical spelling: plain notation, no trailing fraction zeros ('1.5', '0.000000000000000000000000000001',
    '0'). Cast it where arithmetic needs it (`to_float`). -#}
{% macro variable_decimal(expr) -%}
    {{ return(adapter.dispatch('variable_decimal', 'cdcflow')(expr)) }}
{%- endmacro %}

{% macro duckdb__variable_decimal(expr) -%}
    {%- set scientific = "'^(-?)([0-9])(\\.([0-9]*))?[eE]-([0-9]+)$'" -%}
    {%- set plain -%}
        case
            when {{ expr }} like '%E%' or {{ expr }} like '%e%' then
                regexp_extract({{ expr }}, {{ scientific }}, 1)
                || '0.'
                || repeat('0', cast(regexp_extract({{ expr }}, {{ scientific }}, 5) as integer) - 1)
                || regexp_extract({{ expr }}, {{ scientific }}, 2)
                || regexp_extract({{ expr }}, {{ scientific }}, 4)
            else {{ expr }}
        end
    {%- endset -%}
    case
        when {{ expr }} is null then null
        when ({{ plain }}) not like '%.%' then ({{ plain }})
        when rtrim(rtrim(({{ plain }}), '0'), '.') in ('', '-', '-0') then '0'
        else rtrim(rtrim(({{ plain }}), '0'), '.')
    end
{%- endmacro %}

{% macro bigquery__variable_decimal(expr) -%}
    {{ expr }}
{%- endmacro %}


{#- `expr` minus `seconds` seconds (a timestamp with time zone). -#}
{% macro timestamp_minus_seconds(expr, seconds) -%}
    {{ return(adapter.dispatch('timestamp_minus_seconds', 'cdcflow')(expr, seconds)) }}
{%- endmacro %}

{% macro duckdb__timestamp_minus_seconds(expr, seconds) -%}
    ({{ expr }} - to_microseconds(cast({{ (seconds * 1000000) | int }} as bigint)))
{%- endmacro %}

{% macro bigquery__timestamp_minus_seconds(expr, seconds) -%}
    timestamp_sub({{ expr }}, interval {{ (seconds * 1000000) | int }} microsecond)
{%- endmacro %}


{#- The text at a JSONPath (`$.sector`) of a JSON document held as text; NULL when absent. -#}
{% macro json_text(expr, path) -%}
    {{ return(adapter.dispatch('json_text', 'cdcflow')(expr, path)) }}
{%- endmacro %}

{% macro duckdb__json_text(expr, path) -%}
    json_extract_string({{ expr }}, '{{ path }}')
{%- endmacro %}

{% macro bigquery__json_text(expr, path) -%}
    json_value({{ expr }}, '{{ path }}')
{%- endmacro %}


{#- A double precision float, for ratios and scores (never for money). -#}
{% macro to_float(expr) -%}
    {{ return(adapter.dispatch('to_float', 'cdcflow')(expr)) }}
{%- endmacro %}

{% macro duckdb__to_float(expr) -%}
    cast({{ expr }} as double)
{%- endmacro %}

{% macro bigquery__to_float(expr) -%}
    cast({{ expr }} as float64)
{%- endmacro %}


{#- The first day of the month of a DATE, as a DATE. -#}
{% macro month_of(date_expr) -%}
    {{ return(adapter.dispatch('month_of', 'cdcflow')(date_expr)) }}
{%- endmacro %}

{% macro duckdb__month_of(date_expr) -%}
    cast(date_trunc('month', {{ date_expr }}) as date)
{%- endmacro %}

{% macro bigquery__month_of(date_expr) -%}
    date_trunc({{ date_expr }}, month)
{%- endmacro %}


{#- Whole days from DATE `start` to DATE `end` (negative when `end` is earlier). -#}
{% macro days_between(start, end) -%}
    {{ return(adapter.dispatch('days_between', 'cdcflow')(start, end)) }}
{%- endmacro %}

{% macro duckdb__days_between(start, end) -%}
    datediff('day', {{ start }}, {{ end }})
{%- endmacro %}

{% macro bigquery__days_between(start, end) -%}
    date_diff({{ end }}, {{ start }}, day)
{%- endmacro %}


{#- A value in a form `=` and `is distinct from` accept: BigQuery cannot compare arrays or JSON. -#}
{% macro comparable(expr, semantic) -%}
    {{ return(adapter.dispatch('comparable', 'cdcflow')(expr, semantic)) }}
{%- endmacro %}

{% macro duckdb__comparable(expr, semantic) -%}
    {{ expr }}
{%- endmacro %}

{% macro bigquery__comparable(expr, semantic) -%}
    {%- if semantic == 'array' -%}
        to_json_string({{ expr }})
    {%- else -%}
        {{ expr }}
    {%- endif -%}
{%- endmacro %}

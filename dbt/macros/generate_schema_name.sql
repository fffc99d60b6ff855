{#- A model's schema is its folder's `+schema` as is (bronze, silver, gold), never prefixed with the
    target's schema: the names are a contract shared by DuckDB and BigQuery. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}

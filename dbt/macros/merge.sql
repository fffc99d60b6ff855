{#- Incremental MERGE for silver.

    A silver current-state batch holds one row per changed key: its newest live version, or a row whose
    `_op` is 'd' (deleted) or 't' (every version truncated away) for a key that is no longer live. Such rows
    must delete the key from silver, which neither dbt's merge nor delete+insert does, so silver merges
    with one statement of its own:

        merge into silver.<table> using <batch> on <primary key>
        when matched and <batch row is not live> then delete
        when matched then update set <every other column>
        when not matched and <batch row is live> then insert …

    Which rows are "not live" comes from the model's `meta.cdcflow_delete_ops`. Without it (the history
    models) this is a plain upsert. The statement is the same SQL on DuckDB (≥ 1.4) and BigQuery; how it is
    reached differs: DuckDB runs the custom incremental strategy `cdcflow_merge`, BigQuery (whose
    materialization accepts only its own strategies) runs `merge`, whose `get_merge_sql` we dispatch to here
    for the models that carry `cdcflow_delete_ops`. -#}

{% macro cdcflow_delete_ops() -%}
    {%- set meta = config.get('meta') or {} -%}
    {{ return(meta.get('cdcflow_delete_ops') or []) }}
{%- endmacro %}


{% macro cdcflow_merge_sql(target, source, unique_key, dest_columns, delete_ops, incremental_predicates=none) -%}
    {%- set keys = [unique_key] if unique_key is string else unique_key -%}
    {%- if not keys -%}
        {{ exceptions.raise_compiler_error("cdcflow_merge needs a unique_key (the table's primary key)") }}
    {%- endif -%}
    {%- set names = dest_columns | map(attribute='name') | list -%}
    {%- set key_names = keys | map('lower') | list -%}
    {%- set not_live -%}
        dbt_internal_source._op in ({% for op in delete_ops %}'{{ op }}'{{ ', ' if not loop.last }}{% endfor %})
    {%- endset %}
    merge into {{ target }} as dbt_internal_dest
    using {{ source }} as dbt_internal_source
    on (
        {%- for key in keys %}
        dbt_internal_dest.{{ adapter.quote(key) }} = dbt_internal_source.{{ adapter.quote(key) }}
        {{- ' and' if not loop.last }}
        {%- endfor %}
        {%- for predicate in incremental_predicates or [] %}
        and ({{ predicate }})
        {%- endfor %}
    )
    {%- if delete_ops %}
    when matched and {{ not_live }} then delete
    {%- endif %}
    when matched then update set
        {%- for name in names if name | lower not in key_names %}
        {{ adapter.quote(name) }} = dbt_internal_source.{{ adapter.quote(name) }}{{ ',' if not loop.last }}
        {%- endfor %}
    when not matched {%- if delete_ops %} and not ({{ not_live }}){% endif %} then insert (
        {%- for name in names %}
        {{ adapter.quote(name) }}{{ ',' if not loop.last }}
        {%- endfor %}
    ) values (
        {%- for name in names %}
        dbt_internal_source.{{ adapter.quote(name) }}{{ ',' if not loop.last }}
        {%- endfor %}
    )
{%- endmacro %}


{#- DuckDB: `incremental_strategy: cdcflow_merge` (dbt looks up `get_incremental_<strategy>_sql`). -#}
{% macro get_incremental_cdcflow_merge_sql(arg_dict) -%}
    {{ return(cdcflow_merge_sql(
        arg_dict['target_relation'],
        arg_dict['temp_relation'],
        arg_dict['unique_key'],
        arg_dict['dest_columns'],
        cdcflow_delete_ops(),
        arg_dict.get('incremental_predicates'),
    )) }}
{%- endmacro %}


{#- BigQuery: dbt's `merge` strategy dispatches `get_merge_sql`; the root project's variant comes first. -#}
{% macro bigquery__get_merge_sql(target, source, unique_key, dest_columns, incremental_predicates=none) -%}
    {%- set delete_ops = cdcflow_delete_ops() -%}
    {%- if delete_ops -%}
        {{ cdcflow_merge_sql(target, source, unique_key, dest_columns, delete_ops, incremental_predicates) }}
    {%- else -%}
        {{ default__get_merge_sql(target, source, unique_key, dest_columns, incremental_predicates) }}
    {%- endif -%}
{%- endmacro %}


{#- A silver column whose bronze column widened (a wider integer or decimal: `services/warehouse/bronze.py`)
    changes type in place under `on_schema_change: sync_all_columns`. dbt's default adds a column, copies,
    drops and renames, which moves the column to the end and needs DROP … CASCADE; DuckDB alters it in place.
    BigQuery's own variant rewrites the table with a CAST. -#}
{% macro duckdb__alter_column_type(relation, column_name, new_column_type) -%}
    {% call statement('alter_column_type') %}
        alter table {{ relation.render() }} alter column {{ adapter.quote(column_name) }} set data type {{ new_column_type }}
    {% endcall %}
{%- endmacro %}

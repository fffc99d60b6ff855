{#- Silver, for any captured table, from its contract.

    Every silver model is a two-line file generated from a contract (`cdcflow schemas silver`, also run by
    `cdcflow transform`): it calls `silver_current` or `silver_history` with the table's description —

        {"schema": "lending", "table": "customers", "source": "lending__customers",
         "primary_key": ["customer_id"], "columns": [{"name": "customer_id", "semantic": "int64"}, …]}

    — and all the logic is here, so onboarding a table writes no SQL.

    The versions of a row are its bronze change events ('c', 'u', 'r', 'd'), ordered by `_source_lsn`, then
    `_kafka_offset` (a row's key maps to one partition; snapshot rows share one LSN). A read of an
    incremental snapshot (`cdcflow backfill`) carries no LSN: Debezium emits it where its chunk's window closes
    in the stream, after dropping the keys that changed inside the window, so within its partition it follows
    every version emitted before it and precedes every one emitted after (the chunk sees every change emitted
    before its window: the source's `capture.sql` holds the window until commits in flight are visible). It
    takes the highest LSN of its key's earlier versions in the same topic partition (0 when it has none: first,
    and before any truncate) and sorts after the version that LSN belongs to (a copy of that version emitted
    again after a connector restart included), then by offset.

    A topic whose partition count was raised (more partitions to scale out) sends a key's later changes to
    another partition. Streamed versions keep their order (the LSN), but a read of such a key may have its
    earlier versions in the partition the key left: a read of a key whose versions span partitions of a topic
    also takes the highest LSN of the key's versions in the other partitions written before it — by Kafka
    timestamp, the only order across partitions — and such a key's reads sort among themselves by timestamp.
    On that order:

    - TOAST: a version whose `_unavailable_columns` names a column did not carry its value (PostgreSQL left
      the out-of-line value untouched); it takes the value of the newest earlier version that had it.
      Only columns PostgreSQL can store out of line (variable-length types) are looked at.
    - Truncate: a 't' event removes every version with a lower LSN (a snapshot read: the LSN it takes above),
      of every key. Current state ignores those versions; in history they stay, closed at the truncate.
    - Deletes: a key whose newest version is 'd' is not live; in history a delete closes the version before.

    Incremental runs read only the keys with bronze rows loaded after silver's newest `_loaded_at` (or every
    key silver holds when such rows include a truncate, and every key when the contract has a column silver
    does not hold yet) and recompute those keys from all their bronze versions, so versions that arrive late
    or out of order land correctly. -#}

{% macro _silver_check(table) -%}
    {%- if not table.primary_key -%}
        {{ exceptions.raise_compiler_error(
            "silver." ~ table.table ~ ": the contract of " ~ table.schema ~ "." ~ table.table
            ~ " has no primary key; cdcflow orders a row's versions by its key. Add a primary key in"
            ~ " PostgreSQL and regenerate the contract, or leave the table out of the connector.") }}
    {%- endif -%}
{%- endmacro %}


{#- Columns PostgreSQL may TOAST: the variable-length types. Keys are never TOASTed. -#}
{% macro _silver_toastable(table, column) -%}
    {{ return(column.name not in table.primary_key
              and column.semantic in ['string', 'json', 'bytes', 'array', 'decimal', 'variable_decimal']) }}
{%- endmacro %}


{% macro _silver_toastable_columns(table) -%}
    {%- set found = [] -%}
    {%- for column in table.columns if _silver_toastable(table, column) -%}
        {%- do found.append(column) -%}
    {%- endfor -%}
    {{ return(found) }}
{%- endmacro %}


{% macro _silver_keys(table, alias=none) -%}
    {%- for key in table.primary_key -%}
        {{ alias ~ '.' if alias }}{{ adapter.quote(key) }}{{ ', ' if not loop.last }}
    {%- endfor -%}
{%- endmacro %}


{% macro _silver_key_match(table, left, right) -%}
    {%- for key in table.primary_key -%}
        {{ left }}.{{ adapter.quote(key) }} = {{ right }}.{{ adapter.quote(key) }}{{ ' and ' if not loop.last }}
    {%- endfor -%}
{%- endmacro %}


{#- The unconstrained NUMERIC columns of the key: bronze may spell one value several ways (DuckDB holds it
    as text with 38 decimals), silver holds its exact form (`_silver_value`). -#}
{% macro _silver_spelled_keys(table) -%}
    {{ return(table.columns | selectattr('semantic', 'equalto', 'variable_decimal')
              | selectattr('name', 'in', table.primary_key) | list) }}
{%- endmacro %}


{#- CTE `bronze_keyed`, when the key has such a column: bronze with its key in silver's form, so every
    comparison of keys (bronze with bronze, bronze with silver, in full builds and incremental runs alike)
    sees one spelling of a value. Nothing otherwise. -#}
{% macro _silver_keyed_bronze(table, src) -%}
    {%- set spelled = _silver_spelled_keys(table) -%}
    {%- if spelled %}
    bronze_keyed as (
        select * replace (
            {%- for column in spelled %}
            {{ _silver_value(column, 'b') }} as {{ adapter.quote(column.name) }}{{ ',' if not loop.last }}
            {%- endfor %}
        )
        from {{ src }} as b
    ),
    {%- endif %}
{%- endmacro %}


{#- What the model reads bronze as: `bronze_keyed` when there is one, else bronze itself. -#}
{% macro _silver_bronze(table, src) -%}
    {{ return('bronze_keyed' if _silver_spelled_keys(table) else src) }}
{%- endmacro %}


{#- The column as silver holds it (an unconstrained NUMERIC in the warehouse's exact form). -#}
{% macro _silver_value(column, alias) -%}
    {%- set ref = alias ~ '.' ~ adapter.quote(column.name) -%}
    {%- if column.semantic == 'variable_decimal' -%}
        {{ cdcflow.variable_decimal(ref) }}
    {%- else -%}
        {{ ref }}
    {%- endif -%}
{%- endmacro %}


{#- CTEs `watermark`, `fresh` and `changed_keys` of an incremental run. `open_only`: on a truncate, only the
    keys whose newest silver row is still open (history) need another look. -#}
{% macro _silver_changed_keys(table, src, open_only) -%}
    {#- A column silver does not hold yet (the contract gained it): rows loaded before this run may carry it
        already, loaded while a run built from the older contract passed them, so every key is read again. -#}
    {#- `this` is text in a dbt unit test: a stand-in for the table, holding every column -#}
    {%- set held = [] if this is string else
                   adapter.get_columns_in_relation(this) | map(attribute='name') | map('lower') | list -%}
    {%- set new_columns = table.columns | map(attribute='name') | map('lower') | reject('in', held) | list
                          if held else [] %}
    watermark as (
        {%- if new_columns %}
        select cast(null as timestamp) as loaded_at
        {%- else %}
        select max(_loaded_at) as loaded_at from {{ this }}
        {%- endif %}
    ),

    fresh as (
        select {{ _silver_keys(table, 'b') }}, b._op
        from {{ src }} as b
        cross join watermark as w
        where w.loaded_at is null
           or b._loaded_at > {{ cdcflow.timestamp_minus_seconds('w.loaded_at', var('cdcflow_lookback_seconds', 0)) }}
    ),

    fresh_keys as (
        select distinct {{ _silver_keys(table) }}
        from (
            select {{ _silver_keys(table) }} from fresh where _op in ('c', 'u', 'r', 'd')
            union all
            select {{ _silver_keys(table) }} from {{ this }}
            where exists (select 1 from fresh where _op = 't') {{ 'and ' ~ adapter.quote(table.period.current) if open_only }}
        ) as candidates
    ),
    {%- if _silver_toastable_columns(table) %}

    {#- with the other key of each UPDATE that changed a key of theirs (`_silver_moved_keys`): the new key takes
        the old key's TOASTed values, so the old key's versions are read whenever the new key's are #}
    changed_keys as (
        select distinct {{ _silver_keys(table) }}
        from (
            select {{ _silver_keys(table) }} from fresh_keys
            union all
            select {{ _silver_keys(table, 'o') }}
            from {{ src }} as n
            inner join fresh_keys as k on {{ _silver_key_match(table, 'n', 'k') }}
            inner join {{ src }} as o on o._kafka_topic = n._kafka_topic and o._source_lsn = n._source_lsn
            where n._op in ('c', 'd') and o._op in ('c', 'd') and o._op != n._op
        ) as candidates
    ),
    {%- else %}

    changed_keys as (
        select * from fresh_keys
    ),
    {%- endif %}
{%- endmacro %}


{#- The order of a key's versions, oldest first (`desc`: newest first); see the header. -#}
{% macro _silver_order(desc=false) -%}
    {%- set direction = ' desc' if desc else '' -%}
    _order_lsn{{ direction }}, _order_read{{ direction }}, _order_moved_at{{ direction }}, _kafka_offset{{ direction }}
{%- endmacro %}


{#- CTE `versions`: every version of the keys in scope, TOAST values carried forward, with the window
    columns both models need. -#}
{% macro _silver_versions(table, src, truncated_lsn=none) -%}
    {%- set key_list = _silver_keys(table) -%}
    {#- Reads, and the keys among theirs whose versions span partitions of a topic: narrow scans of bronze,
        empty on a table never backfilled, so a build without reads pays next to nothing for them. -#}
    reads as (
        select {{ _silver_keys(table, 'b') }}, b._kafka_topic, b._kafka_partition, b._kafka_offset, b._kafka_timestamp
        from {{ src }} as b
        {%- if is_incremental() %}
        inner join changed_keys as k on {{ _silver_key_match(table, 'b', 'k') }}
        {%- endif %}
        where b._op in ('c', 'u', 'r', 'd') and b._source_lsn is null
    ),

    moved_keys as (
        select {{ _silver_keys(table, 'v') }}, v._kafka_topic
        from {{ src }} as v
        inner join (select distinct {{ key_list }}, _kafka_topic from reads) as r
            on {{ _silver_key_match(table, 'v', 'r') }} and v._kafka_topic = r._kafka_topic
        where v._op in ('c', 'u', 'r', 'd')
        group by {{ _silver_keys(table, 'v') }}, v._kafka_topic
        having min(v._kafka_partition) != max(v._kafka_partition)
    ),

    reads_of_moved_keys as (
        select
            {{ _silver_keys(table, 'r') }}, r._kafka_topic, r._kafka_partition, r._kafka_offset,
            max(v._source_lsn) as _lsn_elsewhere
        from reads as r
        inner join moved_keys as m
            on {{ _silver_key_match(table, 'r', 'm') }} and r._kafka_topic = m._kafka_topic
        left join {{ src }} as v
            on {{ _silver_key_match(table, 'r', 'v') }}
            and v._kafka_topic = r._kafka_topic
            and v._kafka_partition != r._kafka_partition
            and v._kafka_timestamp < r._kafka_timestamp
            and v._op in ('c', 'u', 'r', 'd')
        group by {{ _silver_keys(table, 'r') }}, r._kafka_topic, r._kafka_partition, r._kafka_offset
    ),

    placed as (
        select
            b.*,
            coalesce(
                max(b._source_lsn) over (
                    partition by {{ _silver_keys(table, "b") }}, b._kafka_topic, b._kafka_partition
                    order by b._kafka_offset
                    rows between unbounded preceding and 1 preceding
                ),
                0
            ) as _lsn_in_partition,
            coalesce(e._lsn_elsewhere, 0) as _lsn_elsewhere,
            e._kafka_topic is not null as _moved
        from {{ src }} as b
        {%- if is_incremental() %}
        inner join changed_keys as k on {{ _silver_key_match(table, 'b', 'k') }}
        {%- endif %}
        left join reads_of_moved_keys as e
            on {{ _silver_key_match(table, 'b', 'e') }}
            and b._kafka_topic = e._kafka_topic
            and b._kafka_partition = e._kafka_partition
            and b._kafka_offset = e._kafka_offset
        where b._op in ('c', 'u', 'r', 'd')
    ),

    ordered as (
        select
            *,
            case
                when _source_lsn is not null then _source_lsn
                when _lsn_elsewhere > _lsn_in_partition then _lsn_elsewhere
                else _lsn_in_partition
            end as _order_lsn,
            case when _source_lsn is null then 1 else 0 end as _order_read,
            case when _source_lsn is null and _moved then _kafka_timestamp end as _order_moved_at
        from placed
    ),

    versions as (
        select *
        from ordered
        {%- if truncated_lsn %}
        where _order_lsn > {{ truncated_lsn }}
        {%- endif %}
    ),
    {%- set toastable = _silver_toastable_columns(table) %}
    {%- if toastable %}
    {{ _silver_moved_keys(table, src, toastable) }}
    {%- endif %}

    carried as (
        select
            {%- for column in table.columns %}
            {%- set name = adapter.quote(column.name) %}
            {%- if _silver_toastable(table, column) %}
            case
                when {{ cdcflow.list_contains('_unavailable_columns', column.name) }} and not _moved_in then last_value(
                    case
                        when not {{ cdcflow.list_contains('_unavailable_columns', column.name) }} or _moved_in
                            then {{ name }}
                    end
                    ignore nulls
                ) over (
                    partition by {{ key_list }}
                    order by {{ _silver_order() }}
                    rows between unbounded preceding and current row
                )
                else {{ name }}
            end as {{ name }},
            {%- else %}
            {{ name }},
            {%- endif %}
            {%- endfor %}
            _op,
            _source_ts,
            _source_lsn,
            _order_lsn,
            _kafka_partition,
            _kafka_offset,
            _loaded_at,
            row_number() over (
                partition by {{ key_list }} order by {{ _silver_order(desc=true) }}
            ) as _recency,
            max(_loaded_at) over (partition by {{ key_list }}) as _key_loaded_at,
            lead(_order_lsn) over (
                partition by {{ key_list }} order by {{ _silver_order() }}
            ) as _next_lsn,
            lead(_source_lsn) over (
                partition by {{ key_list }} order by {{ _silver_order() }}
            ) as _next_source_lsn,
            lead(_source_ts) over (
                partition by {{ key_list }} order by {{ _silver_order() }}
            ) as _next_ts
        from {{ 'versions_moved' if toastable else 'versions' }}
    ),
{%- endmacro %}


{#- CTEs `moves`, `moved_from`, `moved_in` and `versions_moved`. An UPDATE that changes a row's key comes as a
    delete of the old key and a create of the new one, both at the update's LSN. The create does not carry the
    values PostgreSQL left TOASTed; they are the old key's, as it stood before its delete: of each column, the
    newest value that the old key's versions since its last create carried. `versions_moved` is `versions`
    with those values in the create (`_moved_in`: the create's unavailable columns are then known). Read from
    bronze, not from `versions`, which is computed once. One move is followed: when the old key's last create
    was itself a move that left the value out, the value is NULL (never one of a life the key ended). -#}
{% macro _silver_moved_keys(table, src, toastable) -%}
    moves as (
        select
            {%- for key in table.primary_key %}
            d.{{ adapter.quote(key) }},
            {%- endfor %}
            c._kafka_topic as _moved_to_topic,
            c._kafka_partition as _moved_to_partition,
            c._kafka_offset as _moved_to_offset,
            d._kafka_partition as _moved_from_partition,
            d._kafka_offset as _moved_from_offset,
            d._source_lsn as _moved_at_lsn
        from {{ src }} as c
        {%- if is_incremental() %}
        inner join changed_keys as k on {{ _silver_key_match(table, 'c', 'k') }}
        {%- endif %}
        inner join {{ src }} as d
            on d._kafka_topic = c._kafka_topic
            and d._source_lsn = c._source_lsn
            and d._op = 'd'
            and not ({{ _silver_key_match(table, 'c', 'd') }})
        where c._op = 'c'
          and (
            {%- for column in toastable %}
            {{ cdcflow.list_contains('c._unavailable_columns', column.name) }}{{ ' or' if not loop.last }}
            {%- endfor %}
          )
    ),

    {#- the old key's versions before its delete, newest first: in the delete's partition by offset (a
        snapshot read has no LSN), then those a raised partition count left in another, by LSN #}
    moved_from as (
        select
            m._moved_to_topic,
            m._moved_to_partition,
            m._moved_to_offset,
            {%- for column in toastable %}
            p.{{ adapter.quote(column.name) }},
            {%- endfor %}
            p._unavailable_columns,
            p._op,
            row_number() over (
                partition by m._moved_to_topic, m._moved_to_partition, m._moved_to_offset
                order by
                    case when p._kafka_partition = m._moved_from_partition then 1 else 0 end desc,
                    case when p._kafka_partition = m._moved_from_partition then p._kafka_offset else -1 end desc,
                    coalesce(p._source_lsn, -1) desc,
                    p._kafka_offset desc
            ) as _recency
        from moves as m
        inner join {{ src }} as p
            on {{ _silver_key_match(table, 'p', 'm') }}
            and p._kafka_topic = m._moved_to_topic
            and p._op in ('c', 'u', 'r', 'd')
            and (
                (p._kafka_partition = m._moved_from_partition and p._kafka_offset < m._moved_from_offset)
                or (p._kafka_partition != m._moved_from_partition and p._source_lsn < m._moved_at_lsn)
            )
    ),

    {#- of those, the old key's last life: from its newest create (an insert, or a move into it, whose values
        are then not followed further) on, after its newest delete #}
    moved_life as (
        select *
        from (
            select
                *,
                least(
                    coalesce(
                        min(case when _op = 'c' then _recency end) over (
                            partition by _moved_to_topic, _moved_to_partition, _moved_to_offset
                        ),
                        9223372036854775807
                    ),
                    coalesce(
                        min(case when _op = 'd' then _recency end) over (
                            partition by _moved_to_topic, _moved_to_partition, _moved_to_offset
                        ) - 1,
                        9223372036854775807
                    )
                ) as _moved_life
            from moved_from
        ) as f
        where _op != 'd' and _recency <= _moved_life
    ),

    moved_in as (
        select
            _moved_to_topic,
            _moved_to_partition,
            _moved_to_offset,
            {%- for column in toastable %}
            first_value(
                case
                    when not {{ cdcflow.list_contains('_unavailable_columns', column.name) }}
                        then {{ adapter.quote(column.name) }}
                end
                ignore nulls
            ) over (
                partition by _moved_to_topic, _moved_to_partition, _moved_to_offset
                order by _recency
                rows between unbounded preceding and unbounded following
            ) as {{ adapter.quote(column.name) }},
            {%- endfor %}
            _recency
        from moved_life
    ),

    versions_moved as (
        select
            v.* replace (
                {%- for column in toastable %}
                {%- set name = adapter.quote(column.name) %}
                case
                    when m._moved_to_offset is not null
                        and {{ cdcflow.list_contains('v._unavailable_columns', column.name) }}
                        then m.{{ name }}
                    else v.{{ name }}
                end as {{ name }}{{ ',' if not loop.last }}
                {%- endfor %}
            ),
            m._moved_to_offset is not null as _moved_in
        from versions as v
        left join moved_in as m
            on m._recency = 1
            and m._moved_to_topic = v._kafka_topic
            and m._moved_to_partition = v._kafka_partition
            and m._moved_to_offset = v._kafka_offset
    ),
{%- endmacro %}


{#- silver.<table>: the current state. -#}
{% macro silver_current(table) -%}
    {{- _silver_check(table) -}}
    {%- set bronze = source('bronze', table.source) -%}
    {%- set src = _silver_bronze(table, bronze) -%}
with
    {{- _silver_keyed_bronze(table, bronze) }}
    {%- if is_incremental() %}
    {{ _silver_changed_keys(table, src, open_only=false) }}
    {%- endif %}

    truncated as (
        select coalesce(max(_source_lsn), -1) as lsn from {{ src }} where _op = 't'
    ),

    {{ _silver_versions(table, src, truncated_lsn='(select lsn from truncated)') }}

    newest as (
        select * from carried where _recency = 1
    )

{%- if is_incremental() %}

{#- One row per changed key; not live ('d', or 't' when no version survived) means: delete it. -#}
select
    {%- for column in table.columns %}
    {%- if column.name in table.primary_key %}
    k.{{ adapter.quote(column.name) }},
    {%- else %}
    {{ _silver_value(column, 'n') }} as {{ adapter.quote(column.name) }},
    {%- endif %}
    {%- endfor %}
    coalesce(n._op, 't') as _op,
    n._source_ts,
    n._source_lsn,
    n._kafka_partition,
    n._kafka_offset,
    n._key_loaded_at as _loaded_at
from changed_keys as k
left join newest as n on {{ _silver_key_match(table, 'k', 'n') }}

{%- else %}

select
    {%- for column in table.columns %}
    {{ _silver_value(column, 'n') }} as {{ adapter.quote(column.name) }},
    {%- endfor %}
    n._op,
    n._source_ts,
    n._source_lsn,
    n._kafka_partition,
    n._kafka_offset,
    n._key_loaded_at as _loaded_at
from newest as n
where n._op != 'd'

{%- endif %}
{%- endmacro %}


{#- silver.<table>_history: every version (SCD2), valid from its commit until the next version, delete
    or truncate of the row. The period's columns are named by `table.period`: `valid_from`, `valid_to` and
    `is_current`, or `_valid_from`, `_valid_to` and `_is_current` for a table with a column of one of those
    names (services/common/contracts/reserved.py). -#}
{% macro silver_history(table) -%}
    {{- _silver_check(table) -}}
    {%- set bronze = source('bronze', table.source) -%}
    {%- set src = _silver_bronze(table, bronze) -%}
with
    {{- _silver_keyed_bronze(table, bronze) }}
    {%- if is_incremental() %}
    {{ _silver_changed_keys(table, src, open_only=true) }}
    {%- endif %}

    {{ _silver_versions(table, src) }}

    truncates as (
        select coalesce(_source_lsn, 0) as _truncate_lsn, min(_source_ts) as _truncated_at
        from {{ src }}
        where _op = 't'
        group by coalesce(_source_lsn, 0)
    ),

    closed_by_truncate as (
        select
            {{ _silver_keys(table, 'c') }}, c._kafka_partition, c._kafka_offset, min(t._truncate_lsn) as _truncate_lsn
        from carried as c
        inner join truncates as t on t._truncate_lsn > c._order_lsn
        group by {{ _silver_keys(table, 'c') }}, c._kafka_partition, c._kafka_offset
    ),

    validity as (
        select
            c.*,
            case
                when t._truncate_lsn is not null and (c._next_lsn is null or t._truncate_lsn < c._next_lsn)
                    then t._truncated_at
                else c._next_ts
            end as _valid_to
        from carried as c
        left join closed_by_truncate as x
            on {{ _silver_key_match(table, 'c', 'x') }}
            and c._kafka_partition = x._kafka_partition
            and c._kafka_offset = x._kafka_offset
        left join truncates as t on t._truncate_lsn = x._truncate_lsn
    )

{#- A version sent again (the connector restarted before its offsets were stored: the same LSN, a later
    offset) is one version: its last copy stands for it. An earlier copy a previous run wrote is deleted
    (`_op` 'x', the history models' delete op); a full build leaves it out. -#}
select
    {%- for column in table.columns %}
    {{ _silver_value(column, 'v') }} as {{ adapter.quote(column.name) }},
    {%- endfor %}
    case when v._source_lsn = v._next_source_lsn then 'x' else v._op end as _op,
    v._source_ts,
    v._source_lsn,
    v._kafka_partition,
    v._kafka_offset,
    v._loaded_at,
    v._source_ts as {{ adapter.quote(table.period['from']) }},
    v._valid_to as {{ adapter.quote(table.period.to) }},
    v._valid_to is null as {{ adapter.quote(table.period.current) }}
from validity as v
where v._op != 'd'
{%- if not is_incremental() %}
  {#- as the incremental case above tells a copy: equal LSNs, so two reads (no LSN) are two versions #}
  and not coalesce(v._source_lsn = v._next_source_lsn, false)
{%- endif %}
{%- endmacro %}

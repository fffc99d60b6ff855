{#- Silver's live rows are exactly the newest non-deleted versions in bronze.

    An independent, deliberately naive recomputation from the whole bronze table (no incremental state, no
    carry-forward): per key the newest version by `_source_lsn`, then `_kafka_offset`, among the versions
    after the last truncate; live unless it is a delete. A read of an incremental snapshot has no LSN and
    takes the highest LSN of its key's versions before it — earlier in its topic partition, or written earlier
    (Kafka timestamp) in another partition of the topic when the key's versions span partitions — for its
    order and against a truncate alike, and sorts after the versions of that LSN; the reads of a key spread
    over partitions sort by timestamp (see macros/silver.sql). Fails with one row per key that is
    - `missing`: live in bronze, absent from silver;
    - `not_live`: in silver, but deleted, truncated or unknown in bronze;
    - `wrong_version`: silver holds another version;
    - `wrong_value`: a column differs from that version (columns the version did not carry because
      PostgreSQL left them TOASTed are not compared here: the unit tests and `cdcflow verify` cover them). 

    Loads go on while this test runs (the transform beside the loader; BigQuery always): bronze may hold
    versions silver has not read yet. Keys with a version loaded after silver's newest `_loaded_at` are in
    flight and left out, and while a truncate is in flight nothing is compared; once loads stop, every key
    is. -#}
{% test cdcflow_silver_matches_bronze(model, source_table, primary_key, columns) %}
{%- set bronze = source('bronze', source_table) -%}
{#- an unconstrained NUMERIC key is compared in silver's exact form: bronze may spell one value several ways -#}
{%- set spelled = columns | selectattr('semantic', 'equalto', 'variable_decimal')
                          | selectattr('name', 'in', primary_key) | list -%}
{%- set src = 'bronze_keyed' if spelled else bronze -%}
{%- set keys -%}
    {%- for key in primary_key -%}{{ adapter.quote(key) }}{{ ', ' if not loop.last }}{%- endfor -%}
{%- endset -%}
{%- set match -%}
    {%- for key in primary_key -%}
        e.{{ adapter.quote(key) }} = s.{{ adapter.quote(key) }}{{ ' and ' if not loop.last }}
    {%- endfor -%}
{%- endset -%}
{%- set pair -%}
    {%- for key in primary_key -%}
        v.{{ adapter.quote(key) }} = r.{{ adapter.quote(key) }}{{ ' and ' if not loop.last }}
    {%- endfor -%}
{%- endset %}

with
{%- if spelled %}
bronze_keyed as (
    select * replace (
        {%- for column in spelled %}
        {{ cdcflow.variable_decimal('b.' ~ adapter.quote(column.name)) }} as {{ adapter.quote(column.name) }}
        {{- ',' if not loop.last }}
        {%- endfor %}
    )
    from {{ bronze }} as b
),
{%- endif %}

watermark as (
    select max(_loaded_at) as loaded_at from {{ model }}
),

in_flight as (
    select b.*
    from {{ src }} as b
    cross join watermark as w
    where w.loaded_at is not null and b._loaded_at > w.loaded_at
),

in_flight_keys as (
    select distinct {{ keys }} from in_flight where _op in ('c', 'u', 'r', 'd')
),

truncated as (
    select coalesce(max(_source_lsn), -1) as lsn from {{ src }} where _op = 't'
),

read_places as (
    select {% for key in primary_key %}r.{{ adapter.quote(key) }}, {% endfor %}r._kafka_topic, r._kafka_partition,
        r._kafka_offset, max(v._source_lsn) as lsn
    from {{ src }} as r
    inner join {{ src }} as v
        on {{ pair }}
        and v._kafka_topic = r._kafka_topic
        and v._op in ('c', 'u', 'r', 'd')
        and (
            (v._kafka_partition = r._kafka_partition and v._kafka_offset < r._kafka_offset)
            or (v._kafka_partition != r._kafka_partition and v._kafka_timestamp < r._kafka_timestamp)
        )
    where r._source_lsn is null and r._op in ('c', 'u', 'r', 'd')
    group by {% for key in primary_key %}r.{{ adapter.quote(key) }}, {% endfor %}r._kafka_topic, r._kafka_partition,
        r._kafka_offset
),

spread_keys as (
    select {{ keys }}, _kafka_topic
    from {{ src }}
    where _op in ('c', 'u', 'r', 'd')
    group by {{ keys }}, _kafka_topic
    having count(distinct _kafka_partition) > 1
),

placed as (
    select
        b.*,
        case when b._source_lsn is null then coalesce(p.lsn, 0) else b._source_lsn end as place_lsn,
        case when b._source_lsn is null then 1 else 0 end as is_read,
        case when b._source_lsn is null and k._kafka_topic is not null then b._kafka_timestamp end as spread_read_at
    from {{ src }} as b
    left join read_places as p
        on {% for key in primary_key %}p.{{ adapter.quote(key) }} = b.{{ adapter.quote(key) }} and {% endfor -%}
        p._kafka_topic = b._kafka_topic and p._kafka_partition = b._kafka_partition and p._kafka_offset = b._kafka_offset
    left join spread_keys as k
        on {% for key in primary_key %}k.{{ adapter.quote(key) }} = b.{{ adapter.quote(key) }} and {% endfor -%}
        k._kafka_topic = b._kafka_topic
    where b._op in ('c', 'u', 'r', 'd')
),

ranked as (
    select
        *,
        row_number() over (
            partition by {{ keys }} order by place_lsn desc, is_read desc, spread_read_at desc, _kafka_offset desc
        ) as recency
    from placed
    where place_lsn > (select lsn from truncated)
),

expected as (
    select * from ranked where recency = 1 and _op != 'd'
),

problems as (
    select {% for key in primary_key %}e.{{ adapter.quote(key) }}, {% endfor %}'missing' as problem
    from expected as e
    left join {{ model }} as s on {{ match }}
    where s.{{ adapter.quote(primary_key[0]) }} is null

    union all

    select {% for key in primary_key %}s.{{ adapter.quote(key) }}, {% endfor %}'not_live' as problem
    from {{ model }} as s
    left join expected as e on {{ match }}
    where e.{{ adapter.quote(primary_key[0]) }} is null

    union all

    select {% for key in primary_key %}e.{{ adapter.quote(key) }}, {% endfor %}
        case
            when e._source_lsn is distinct from s._source_lsn or e._kafka_offset != s._kafka_offset
                then 'wrong_version'
            else 'wrong_value'
        end as problem
    from expected as e
    inner join {{ model }} as s on {{ match }}
    where e._source_lsn is distinct from s._source_lsn
       or e._kafka_offset != s._kafka_offset
       {%- for column in columns if column.name not in primary_key %}
       {%- set name = adapter.quote(column.name) %}
       {%- set bronze_value = cdcflow.variable_decimal('e.' ~ name) if column.semantic == 'variable_decimal' else 'e.' ~ name %}
       or (
           not {{ cdcflow.list_contains('e._unavailable_columns', column.name) }}
           and {{ cdcflow.comparable(bronze_value, column.semantic) }}
               is distinct from {{ cdcflow.comparable('s.' ~ name, column.semantic) }}
       )
       {%- endfor %}
)

select p.*
from problems as p
where not exists (select 1 from in_flight where _op = 't')
  and not exists (
      select 1 from in_flight_keys as f
      where {% for key in primary_key %}f.{{ adapter.quote(key) }} = p.{{ adapter.quote(key) }}{{ ' and ' if not loop.last }}{% endfor %}
  )

{% endtest %}

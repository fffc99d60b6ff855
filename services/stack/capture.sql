-- What cdcflow keeps in every source database it captures. Idempotent: applied on every `cdcflow stack up`
-- and by `cdcflow source add`.
create schema if not exists cdcflow;

-- Debezium's heartbeat.action.query writes here, so WAL keeps moving when the captured tables are idle.
create table if not exists cdcflow.heartbeat (
    id      integer primary key,
    beat_at timestamptz not null
);

-- Debezium's signal table: `cdcflow backfill` inserts execute-snapshot/stop-snapshot signals, the connector
-- writes its incremental snapshots' watermarks. The id is derived from the request (one row, one snapshot).
create table if not exists cdcflow.debezium_signal (
    id   varchar(64) primary key,
    type varchar(32) not null,
    data varchar(2048)
);

-- A chunk of an incremental snapshot must see every transaction the stream delivered before the chunk's
-- window opened: Debezium drops a read key only for changes it streams inside the window. PostgreSQL writes
-- a commit to the WAL, where the connector already streams it, before the transaction becomes visible to
-- other queries. A transaction caught between the two (waiting for a synchronous standby, or descheduled)
-- is streamed before the window yet missed by the chunk's SELECT, which reads its row as it was before and
-- emits that after the change: the newer value lost. So the window opens only once the transactions that
-- were running a statement in this database when it was asked for have ended: waiting up to 200 ms in all
-- (a commit outside a synchronous wait is visible within microseconds; the bound only caps what a long
-- statement costs each chunk), or up to 60 s while one of them waits for a synchronous standby (it has
-- committed). A session idle inside an open transaction is not committing and is not waited for; without
-- pg_read_all_stats the connector's role cannot see other roles' sessions' state and waits for those too.
create or replace function cdcflow.settle_commits_before_window() returns trigger
language plpgsql as $$
declare
    started     timestamptz := clock_timestamp();
    committing  xid[];
    synchronous boolean;
    waited      interval;
begin
    if new.type <> 'snapshot-window-open' then
        return new;
    end if;
    select coalesce(array_agg(l.transactionid), '{}'), coalesce(bool_or(a.wait_event = 'SyncRep'), false)
      into committing, synchronous
      from pg_locks as l
      left join pg_stat_activity as a on a.pid = l.pid
     where l.locktype = 'transactionid' and l.mode = 'ExclusiveLock' and l.granted
       and l.pid <> pg_backend_pid()
       and coalesce(a.datname, current_database()) = current_database()
       and coalesce(a.state, 'active') not in ('idle in transaction', 'idle in transaction (aborted)');
    while cardinality(committing) > 0 loop
        waited := clock_timestamp() - started;
        exit when waited > interval '200 ms' and not synchronous;  -- running statements, not commits
        if waited > interval '60 s' then
            raise warning 'cdcflow: an incremental snapshot window opens while % transaction(s) wait for a '
                          'synchronous standby; a row they changed may be read as it was before them',
                          cardinality(committing);
            exit;
        end if;
        perform pg_sleep(0.001);
        select coalesce(array_agg(l.transactionid), '{}'), coalesce(bool_or(a.wait_event = 'SyncRep'), false)
          into committing, synchronous
          from pg_locks as l
          left join pg_stat_activity as a on a.pid = l.pid
         where l.locktype = 'transactionid' and l.mode = 'ExclusiveLock' and l.granted
           and l.transactionid = any (committing);
    end loop;
    return new;
end
$$;

drop trigger if exists settle_commits_before_window on cdcflow.debezium_signal;
create trigger settle_commits_before_window
    before insert on cdcflow.debezium_signal
    for each row execute function cdcflow.settle_commits_before_window();

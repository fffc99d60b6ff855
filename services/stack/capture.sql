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
-- emits that after the change: the newer value lost. So the window opens only once what was in flight in
-- this database when it was asked for has ended: the transactions then running a statement, up to 200 ms in
-- all (a commit outside a synchronous wait is visible within microseconds; the bound only caps what a long
-- statement costs each chunk), and the commits then waiting for a synchronous standby, up to 60 s (they are
-- streamed already) — a COMMIT PREPARED among them, whose transaction's locks belong to no session. A session
-- idle inside an open transaction is not committing and is not waited for.
--
-- Other roles' sessions' state and wait events are visible only to members of pg_read_all_stats, and the
-- connector's role need not be one: the function runs as its owner (SECURITY DEFINER), the role that applied
-- this file. It reads two catalog views and sleeps; its search_path is fixed so no caller's objects stand in.
create or replace function cdcflow.settle_commits_before_window() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
    started    timestamptz := clock_timestamp();
    running    xid[];   -- transactions running a statement, by id
    syncing    text[];  -- commits waiting for a synchronous standby, by session and statement start
    committing boolean;
begin
    if new.type <> 'snapshot-window-open' then
        return new;
    end if;
    perform pg_stat_clear_snapshot();  -- a transaction reads other sessions' state once unless told again
    select coalesce(array_agg(l.transactionid), '{}')
      into running
      from pg_locks as l
      left join pg_stat_activity as a on a.pid = l.pid
     where l.locktype = 'transactionid' and l.mode = 'ExclusiveLock' and l.granted
       and l.pid <> pg_backend_pid()
       and coalesce(a.datname, current_database()) = current_database()
       and coalesce(a.state, 'active') not in ('idle in transaction', 'idle in transaction (aborted)');
    select coalesce(array_agg(a.pid || '@' || a.query_start), '{}')
      into syncing
      from pg_stat_activity as a
     where a.datname = current_database() and a.wait_event = 'SyncRep' and a.pid <> pg_backend_pid();
    loop
        perform pg_stat_clear_snapshot();
        select coalesce(array_agg(l.transactionid), '{}'), coalesce(bool_or(a.wait_event = 'SyncRep'), false)
          into running, committing
          from pg_locks as l
          left join pg_stat_activity as a on a.pid = l.pid
         where l.locktype = 'transactionid' and l.mode = 'ExclusiveLock' and l.granted
           and l.transactionid = any (running);
        select coalesce(array_agg(a.pid || '@' || a.query_start), '{}')
          into syncing
          from pg_stat_activity as a
         where a.wait_event = 'SyncRep' and a.pid || '@' || a.query_start = any (syncing);
        exit when cardinality(running) = 0 and cardinality(syncing) = 0;
        committing := committing or cardinality(syncing) > 0;
        exit when not committing and clock_timestamp() - started > interval '200 ms';  -- statements, not commits
        if clock_timestamp() - started > interval '60 s' then
            raise warning 'cdcflow: an incremental snapshot window opens while commits wait for a synchronous '
                          'standby; a row they changed may be read as it was before them';
            exit;
        end if;
        perform pg_sleep(0.001);
    end loop;
    return new;
end
$$;

drop trigger if exists settle_commits_before_window on cdcflow.debezium_signal;
create trigger settle_commits_before_window
    before insert on cdcflow.debezium_signal
    for each row execute function cdcflow.settle_commits_before_window();

"""One loader per shard: a lease kept in the lake, taken and renewed with a conditional write.

Two loaders of one shard at once (a rolling update that starts the new pod before the old one stops, or a
second process started by hand) would load the same files at the same moment. Each checks bronze for the
coordinates it is about to insert, but two concurrent transactions do not see each other's rows, so both
would insert. The lease makes the second loader wait: a loader loads only while it holds its shard's lease.

The lease is a small JSON file, ``_leases/loader-shard-<i>-of-<n>.json``: who holds it and until when. It is
taken or renewed with :meth:`~services.common.lake.base.Lake.write_if` on the version that was read, so
two loaders that read the same state cannot both win. A holder renews it at every step, and again between
staging a batch and committing it (a batch of slow load jobs may outlast the lease it began with: a holder
that lost it meanwhile commits nothing); a clean shutdown releases it, so a rolling update hands over at
once. A holder that died without releasing is waited out until its lease expires — unless it ran on this
very host and its process is gone (a restarted process, or a restarted pod whose name is its host name),
which takes it over at once.

What a lease cannot do is stop a holder that froze past its expiry between that last renewal and its commit;
the time to live is therefore the liveness deadline, longer than a commit (one job with its retries), after
which Kubernetes restarts a frozen pod anyway. Expiry is judged by the clocks of the hosts: they must agree
to well within the time to live.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from services.common.lake import Lake, LakeNotFoundError, LakeVersionChangedError
from services.common.logging import get_logger

__all__ = ["LeaseHolder", "ShardLease", "lease_path"]

log = get_logger(__name__)

LEASE_PREFIX = "_leases"


def lease_path(shard: tuple[int, int]) -> str:
    """Where the lease of shard ``(index, count)`` lives in the lake."""
    index, count = shard
    return f"{LEASE_PREFIX}/loader-shard-{index}-of-{count}.json"


@dataclass(frozen=True, slots=True)
class LeaseHolder:
    """A loader process: its host, its process id, and a token unique to this run."""

    host: str
    pid: int
    token: str

    @classmethod
    def this_process(cls) -> LeaseHolder:
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex)

    def is_gone(self) -> bool:
        """Whether this holder ran on this host and its process no longer exists (it can only be known here)."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # a process of another user has that id now
            return False
        return False


@dataclass(frozen=True, slots=True)
class _State:
    holder: LeaseHolder | None
    expires_at: float
    version: str | None  # the lake file's version; None when there is no lease file yet


class ShardLease:
    """The lease of one shard, held by this process while :meth:`hold` keeps returning True."""

    def __init__(
        self,
        lake: Lake,
        shard: tuple[int, int],
        ttl_s: float,
        *,
        holder: LeaseHolder | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lake = lake
        self._path = lease_path(shard)
        self._ttl_s = ttl_s
        self._clock = clock
        self.holder = holder or LeaseHolder.this_process()
        self._held = False
        self._told: bool | None = None  # what the log last said: held, held elsewhere, or nothing yet

    @property
    def held(self) -> bool:
        return self._held

    def hold(self) -> bool:
        """Take the lease or renew it; False while another live loader holds it.

        Storage errors propagate (the caller's cycle treats them as transient and tries again).
        """
        state = self._read()
        now = self._clock()
        if not self._mine(state.holder) and not self._free(state, now):
            self._note(held=False, other=state.holder)
            return False
        record = {
            "host": self.holder.host,
            "pid": self.holder.pid,
            "token": self.holder.token,
            "expires_at": now + self._ttl_s,
        }
        try:
            self._lake.write_if(self._path, json.dumps(record).encode(), version=state.version)
        except LakeVersionChangedError:  # another loader wrote it between the read and the write
            self._note(held=False, other=None)
            return False
        self._note(held=True, other=None)
        return True

    def release(self) -> None:
        """Give the lease up (on a clean shutdown), so the next loader of the shard starts at once."""
        if not self._held:
            return
        state = self._read()
        if not self._mine(state.holder):
            self._held = False
            return
        record = {"host": self.holder.host, "pid": self.holder.pid, "token": self.holder.token, "expires_at": 0}
        with contextlib.suppress(LakeVersionChangedError):  # taken over meanwhile: nothing of ours to give up
            self._lake.write_if(self._path, json.dumps(record).encode(), version=state.version)
        self._held = False
        log.info("loader.lease_released", lease=self._path)

    def _mine(self, holder: LeaseHolder | None) -> bool:
        return holder is not None and holder.token == self.holder.token

    def _free(self, state: _State, now: float) -> bool:
        return state.holder is None or state.expires_at <= now or state.holder.is_gone()

    def _read(self) -> _State:
        listed = next((f for f in self._lake.list(self._path) if f.path == self._path), None)
        if listed is None:
            return _State(None, 0.0, None)
        try:
            raw = json.loads(self._lake.read(self._path))
            holder = LeaseHolder(str(raw["host"]), int(raw["pid"]), str(raw["token"]))
            expires_at = float(raw["expires_at"])
        except LakeNotFoundError:
            return _State(None, 0.0, None)
        except (ValueError, KeyError, TypeError) as exc:  # unreadable: treat as free, replace it on its version
            log.warning("loader.lease_unreadable", lease=self._path, error=str(exc))
            return _State(None, 0.0, listed.version)
        return _State(holder, expires_at, listed.version)

    def _note(self, *, held: bool, other: LeaseHolder | None) -> None:
        if held != self._told:
            self._told = held
            if held:
                log.info("loader.lease_taken", lease=self._path, ttl_s=self._ttl_s)
            else:
                log.warning(
                    "loader.lease_held_elsewhere",
                    lease=self._path,
                    holder=None if other is None else f"{other.host}:{other.pid}",
                )
        self._held = held

"""The local broker's KRaft cluster id (services/stack/kafka.py)."""

from __future__ import annotations

import base64

from services.stack.kafka import new_cluster_id


def test_a_cluster_id_is_sixteen_bytes_and_never_reads_as_an_option() -> None:
    """One id in 64 would start with "-", which the storage tool's parser takes for an option: the stack
    then fails to start. 2,000 draws without a fix hold such an id almost surely."""
    ids = [new_cluster_id() for _ in range(2000)]
    assert not [i for i in ids if i.startswith("-")]
    assert {len(base64.urlsafe_b64decode(i + "==")) for i in ids} == {16}
    assert len(set(ids)) == len(ids)

"""The crash-loop guard's start-up half: the records that killed earlier writers of this group while they
decoded are found, dead-lettered (``decoder_crash``) and quarantined before this writer polls
(``quarantine.py`` holds the notes, the quarantine and the search in child processes)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.common.debezium.records import DecodeFailure
from services.common.errors import TransientError
from services.common.kafka import KafkaException, Message
from services.common.logging import get_logger
from services.common.settings import Settings
from services.consumer.dlq import DlqPublisher
from services.consumer.quarantine import (
    DeadNote,
    Quarantine,
    Range,
    crash_failure,
    dead_notes,
    find_crashers,
    read_range,
)
from services.consumer.replayed import under_original_topics

__all__ = ["CrashRecovery"]

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CrashRecovery:
    settings: Settings
    quarantine: Quarantine
    replay_topic: str
    dlq: DlqPublisher
    dead_letter: Callable[[Sequence[DecodeFailure]], None]
    dlq_timeout_s: float

    def run(self, state_dir: Path) -> None:
        """Examine every note a dead writer of this group left in ``state_dir``."""
        for note in dead_notes(state_dir):
            self._examine(note)

    def _examine(self, note: DeadNote) -> None:
        log.warning("writer.crashed_while_decoding", note=note.path.name, ranges=note.ranges)
        began = time.monotonic()
        try:
            crashers = self._quarantine_crashers(note.ranges)
        except (TransientError, KafkaException) as exc:
            log.error("writer.quarantine_failed", note=note.path.name, error=str(exc))
            note.release()  # examined again at the next start
            return
        note.done()
        log.warning(
            "writer.crash_examined",
            note=note.path.name,
            quarantined=[list(c) for c in crashers],
            duration_s=round(time.monotonic() - began, 2),
        )

    def _quarantine_crashers(self, ranges: list[Range]) -> list[tuple[str, int, int]]:
        """Find the records of ``ranges`` that kill a decoder, DLQ them, then remember them for good."""
        group = self.settings.writer.group_id
        records: dict[str, list[Message]] = defaultdict(list)
        for span in ranges:
            topic, partition = span[0], span[1]
            records[topic] += [
                m
                for m in read_range(self.settings, group, span)
                if (topic, partition, int(m.offset() or 0)) not in self.quarantine
            ]
        decoded_as = under_original_topics(records, self.replay_topic)
        crashers = find_crashers(self.settings, decoded_as, self.settings.writer.decode_timeout_s)
        if not crashers:
            return []
        self.dead_letter([crash_failure(message, death) for message, death in crashers])
        coordinates = [(str(m.topic()), int(m.partition() or 0), int(m.offset() or 0)) for m, _ in crashers]
        for topic, partition in {(t, p) for t, p, _ in coordinates}:
            self.dlq.confirm(topic, partition, self.dlq_timeout_s)  # in the DLQ before it is skipped for good
        self.quarantine.add(coordinates)
        return coordinates

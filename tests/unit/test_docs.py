"""The project's documents read once: no section or paragraph is there twice (an edit that pasted a block
again leaves the reader two versions of the same contract, one of them stale)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from services.common.settings import repo_root

DOCUMENTS = ["README.md", "BENCHMARKS.md", "docs/architecture.md", "docs/runbook.md", "tests/README.md"]
_SHORTEST_PARAGRAPH = 160  # shorter ones (a table row, "Then:") may well repeat


def _blocks(path: Path) -> list[str]:
    return [block.strip() for block in path.read_text().split("\n\n")]


@pytest.mark.parametrize("name", DOCUMENTS)
def test_no_section_or_paragraph_is_there_twice(name: str) -> None:
    path = repo_root() / name
    headings = Counter(line for line in path.read_text().splitlines() if line.startswith("## "))
    assert [h for h, n in headings.items() if n > 1] == []
    paragraphs = Counter(b for b in _blocks(path) if len(b) >= _SHORTEST_PARAGRAPH)
    assert [p[:100] for p, n in paragraphs.items() if n > 1] == []

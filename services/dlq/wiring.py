"""The DLQ tool's wiring: settings → :class:`~services.dlq.app.DlqTool` (the CLI calls this, never ``app``)."""

from __future__ import annotations

from services.common.settings import Settings
from services.dlq.app import DlqTool

__all__ = ["open_tool"]


def open_tool(settings: Settings, group: str | None = None) -> DlqTool:
    """The tool over ``group``'s DLQ (default: ``CDCFLOW_DLQ__GROUP_ID``, else the writer's group)."""
    return DlqTool(
        settings.kafka, settings.dlq, group or settings.dlq_group(), enricher_group=settings.enricher.group_id
    )

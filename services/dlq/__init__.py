"""The DLQ tool: ``cdcflow dlq list|show|replay|purge`` over ``_cdcflow.dlq.<group>``."""

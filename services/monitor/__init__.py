"""``cdcflow monitor``: lag, slots, connectors, freshness and the DLQ, seen from outside the workers."""

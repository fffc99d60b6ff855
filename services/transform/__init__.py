"""The transform: silver and gold with dbt on a schedule, and ``cdcflow verify`` (the warehouse equals the source)."""

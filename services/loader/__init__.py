"""The loader: lake files → bronze tables in idempotent micro-batches."""

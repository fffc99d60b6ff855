"""The enricher: transactions joined, exactly once, with the customer and facility versions of their LSN."""

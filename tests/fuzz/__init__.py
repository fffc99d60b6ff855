"""A structure-aware fuzzer of the whole decode path (JSON with and without the embedded schema, Avro).

Real Debezium change events (``corpus/``) are mutated the way hostile or broken producers would change
them — deep nesting, huge numbers, out-of-range times and scales, invalid UTF-8, lone surrogates, duplicate
and escaped keys, a lying embedded schema, truncation, byte flips — and decoded in batches in a child
process with a time limit, so a segfault, an abort or a hang is caught like an escaping exception. Every
input record must end as a row, a failure or a tombstone, exactly once. Crashers are kept in ``crashers/``
and replayed by ``tests/unit/test_fuzz_decode.py``.

Run longer than the unit test does with ``python -m tests.fuzz --seconds N``.
"""

"""The local runtime: PostgreSQL, a KRaft Kafka broker and Kafka Connect + Debezium as plain processes."""

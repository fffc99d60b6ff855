"""The lake writer: Debezium events from Kafka into partitioned Parquet, committed only once durable."""

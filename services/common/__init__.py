"""The layer every service shares: settings, logging, Kafka clients, decoding, lake and warehouse seams."""

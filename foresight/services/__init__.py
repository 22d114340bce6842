"""Local Kafka and Cassandra for development, tests and the demo (`foresight services`)."""

"""The cache nodes: prefetch commands in, content fetched once and stored in Cassandra, pushed
to the agents over WebSockets (`foresight cache-node`; consumers.server composes one node)."""

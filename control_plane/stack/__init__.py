"""The embedded stack's parts: nats-server, a PostgreSQL cluster and AgentFlow's own processes,
each started as a real process on loopback and stopped by PID."""

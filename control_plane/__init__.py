"""The control plane: the HTTP API, authentication, the planners, the durable orchestrator and dispatch.

It owns the registry (through ``registry``) and talks to workers only through the bus (``bus``).
"""

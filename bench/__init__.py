"""Benchmarks (`af bench`, `make bench`): the durable path measured beside raw JetStream in the same run.

The raw JetStream baseline deliberately speaks nats-py directly, without ``bus``: it is the floor that
any Python system on NATS pays, and AgentFlow is reported as a ratio to it.
"""

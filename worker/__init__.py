"""The worker: the data-plane process that pulls its queue's tasks, runs each in a sandbox, publishes
the result and then acknowledges the task; it heartbeats into ``af_workers`` and drains on SIGTERM."""

"""The PostgreSQL store: migrations, tenants, keys, tools, workflows, runs, tasks, events and audit.

The only package of AgentFlow that speaks SQL; every statement is a named function here.
"""

from registry.db import connect, dsn_with_database
from registry.schema import migrate

__all__ = ["connect", "dsn_with_database", "migrate"]

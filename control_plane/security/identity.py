"""Who a request acts as: an API key's prefix, its tenant and its role."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Identity:
    tenant: str
    role: str
    key_prefix: str

    @property
    def actor(self) -> str:
        """How the audit trail names this identity."""
        return f"key:{self.key_prefix}"

-- A model turn (a call with an idempotency key) is called by one control plane at a time: the one that holds
-- its lease. Another asked for the same turn meanwhile waits for the holder's recorded answer, or for the
-- lease to end: released once the call is recorded, or run out when its holder died without releasing it.

CREATE TABLE llm_call_leases (
    tenant           text NOT NULL,
    idempotency_key  text NOT NULL,
    holder           text NOT NULL,
    expires_at       timestamptz NOT NULL,
    PRIMARY KEY (tenant, idempotency_key)
);

// Package agentflow is the Go client of the AgentFlow HTTP API (v1), built on the standard library alone.
//
// A [Client] registers tools and applies workflows (JSON documents), starts runs (with an idempotency
// key), reads and lists them (cursor pagination, as a [RunPage] or an iterator), streams a run's events
// (Server-Sent Events, resumed with Last-Event-ID after a disconnect), waits for a run to finish (falling
// back to polling when the stream cannot be kept up), cancels runs and sends them signals.
//
// Configuration comes from AF_API_URL and AF_TOKEN, or from options given to [New]. An API key (af_…) is
// exchanged for an access token with POST /v1/auth/token; the access token is refreshed with
// POST /v1/auth/refresh shortly before it expires and whenever the API answers 401, and the key is
// exchanged again when the refresh token is refused.
//
// Every call takes a [context.Context]. Answers 429 and 503 are retried with backoff, honouring
// Retry-After, within a [RetryPolicy]. The API's errors (application/problem+json) are returned as
// [*Problem], whose kind is matched with [errors.Is] against [ErrNotFound], [ErrValidation],
// [ErrConflict], [ErrUnauthorized], [ErrForbidden], [ErrRateLimited] and [ErrUnavailable]; a server
// that cannot be reached is a [*TransportError].
package agentflow

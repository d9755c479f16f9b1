package agentflow

// Retries of answers that say "not now": 429 (a rate or a quota) and 503 (a part of the API is busy or
// down). Both are refusals the API made before acting, so any method may be sent again. Waits honour
// Retry-After and are bounded, so a call never sleeps longer than the policy allows.

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// RetryPolicy bounds the retries of answers 429 and 503.
type RetryPolicy struct {
	// MaxAttempts is the number of times a request is sent at most, the first included; 1 turns retries off.
	MaxAttempts int
	// BaseDelay is the backoff before the first retry when the API sends no Retry-After; it doubles with
	// each retry (with jitter).
	BaseDelay time.Duration
	// MaxDelay caps every backoff. An answer whose Retry-After asks for more is not retried: it is
	// returned at once, as a [*Problem] with that RetryAfter.
	MaxDelay time.Duration
}

// DefaultRetryPolicy is what a [Client] uses unless given [WithRetryPolicy].
var DefaultRetryPolicy = RetryPolicy{MaxAttempts: 4, BaseDelay: 250 * time.Millisecond, MaxDelay: 30 * time.Second}

// retryable answers are refusals that the same request may overcome later.
func retryable(status int) bool {
	return status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable
}

// delay is the wait before retry number `retry` (1 for the first) of an answer with Retry-After
// `header`; false when the policy gives up.
func (p RetryPolicy) delay(retry int, header string, now time.Time) (time.Duration, bool) {
	if retry >= p.MaxAttempts {
		return 0, false
	}
	if wait, ok := parseRetryAfter(header, now); ok {
		return wait, wait <= p.MaxDelay
	}
	return p.backoff(retry), true
}

// backoff doubles BaseDelay per retry up to MaxDelay, and draws the wait from its upper half so that
// clients refused together do not come back together.
func (p RetryPolicy) backoff(retry int) time.Duration {
	wait := p.BaseDelay
	for i := 1; i < retry && wait < p.MaxDelay; i++ {
		wait *= 2
	}
	wait = min(wait, p.MaxDelay)
	if wait <= 1 {
		return wait
	}
	half := wait / 2
	return half + rand.N(half+1)
}

// parseRetryAfter reads a Retry-After value: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
func parseRetryAfter(value string, now time.Time) (time.Duration, bool) {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0, false
	}
	if seconds, err := strconv.ParseUint(value, 10, 32); err == nil {
		return time.Duration(seconds) * time.Second, true
	}
	if at, err := http.ParseTime(value); err == nil {
		return max(at.Sub(now), 0), true
	}
	return 0, false
}

// sleep waits for d unless ctx ends first.
func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

// outlasts reports whether a wait of d would run past ctx's deadline, so that the retry after it could
// never be sent.
func outlasts(ctx context.Context, d time.Duration) bool {
	deadline, ok := ctx.Deadline()
	return ok && time.Until(deadline) < d
}

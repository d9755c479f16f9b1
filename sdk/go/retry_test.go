package agentflow

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// sleeps records the waits a client asked for instead of waiting.
type sleeps struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.waits = append(s.waits, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeps) recorded() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.waits...)
}

// testClient is a client of srv with no credentials whose waits are recorded, not slept.
func testClient(t *testing.T, srv *httptest.Server, opts ...Option) (*Client, *sleeps) {
	t.Helper()
	c, err := New(append([]Option{WithBaseURL(srv.URL), WithToken("")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	recorder := &sleeps{}
	c.sleep = recorder.sleep
	return c, recorder
}

// refusing answers the first `refusals` requests with status and header Retry-After (if not ""), then 200.
type refusing struct {
	mu         sync.Mutex
	refusals   int
	status     int
	retryAfter string
	bodies     []string
}

func (h *refusing) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.bodies = append(h.bodies, string(body))
	if len(h.bodies) <= h.refusals {
		if h.retryAfter != "" {
			w.Header().Set("Retry-After", h.retryAfter)
		}
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(h.status)
		slug := map[int]string{429: "rate-limited", 503: "unavailable"}[h.status]
		_, _ = io.WriteString(w, `{"type":"urn:agentflow:problem:`+slug+`","title":"x","status":0,"detail":"not now","field":null}`)
		return
	}
	_, _ = io.WriteString(w, `{"id":"r1","state":"running","created":true}`)
}

func (h *refusing) sent() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.bodies...)
}

func (h *refusing) requests() int { return len(h.sent()) }

func TestA429IsRetriedAfterTheSecondsOfRetryAfterWithTheSameBody(t *testing.T) {
	handler := &refusing{refusals: 2, status: http.StatusTooManyRequests, retryAfter: "2"}
	srv := httptest.NewServer(handler)
	defer srv.Close()
	c, slept := testClient(t, srv)

	started, err := c.StartRun(context.Background(), RunRequest{Tool: "echo@1.0.0", Input: map[string]int{"n": 1}})
	if err != nil {
		t.Fatal(err)
	}
	if started.ID != "r1" || handler.requests() != 3 {
		t.Fatalf("started %+v after %d requests, want r1 after 3", started, handler.requests())
	}
	if waits := slept.recorded(); len(waits) != 2 || waits[0] != 2*time.Second || waits[1] != 2*time.Second {
		t.Fatalf("waits %v, want [2s 2s]", waits)
	}
	bodies := handler.sent()
	for _, body := range bodies {
		if body != bodies[0] || !strings.Contains(body, `"input":{"n":1}`) {
			t.Fatalf("bodies %q: each attempt must send the same body", bodies)
		}
	}
}

func TestA503WithoutRetryAfterBacksOffDoublingAndGivesUpAfterMaxAttempts(t *testing.T) {
	handler := &refusing{refusals: 100, status: http.StatusServiceUnavailable}
	srv := httptest.NewServer(handler)
	defer srv.Close()
	policy := RetryPolicy{MaxAttempts: 4, BaseDelay: 100 * time.Millisecond, MaxDelay: 250 * time.Millisecond}
	c, slept := testClient(t, srv, WithRetryPolicy(policy))

	_, err := c.GetRun(context.Background(), "r1")
	var problem *Problem
	if !errors.As(err, &problem) || !errors.Is(err, ErrUnavailable) || problem.Status != 503 {
		t.Fatalf("err %v, want the 503 problem once the attempts are spent", err)
	}
	if handler.requests() != 4 {
		t.Fatalf("%d requests, want MaxAttempts = 4", handler.requests())
	}
	// Each wait is drawn from the upper half of min(base * 2^n, max).
	bounds := [][2]time.Duration{{50, 100}, {100, 200}, {125, 250}}
	waits := slept.recorded()
	if len(waits) != 3 {
		t.Fatalf("waits %v, want 3", waits)
	}
	for i, wait := range waits {
		low, high := bounds[i][0]*time.Millisecond, bounds[i][1]*time.Millisecond
		if wait < low || wait > high {
			t.Fatalf("wait %d is %v, want within [%v, %v]", i+1, wait, low, high)
		}
	}
}

func TestARetryAfterLongerThanMaxDelayIsReturnedAtOnceWithItsWait(t *testing.T) {
	handler := &refusing{refusals: 1, status: http.StatusTooManyRequests, retryAfter: "3600"}
	srv := httptest.NewServer(handler)
	defer srv.Close()
	c, slept := testClient(t, srv)

	_, err := c.GetRun(context.Background(), "r1")
	var problem *Problem
	if !errors.As(err, &problem) || !errors.Is(err, ErrRateLimited) {
		t.Fatalf("err %v, want the rate-limited problem", err)
	}
	if problem.RetryAfter != time.Hour || handler.requests() != 1 || len(slept.recorded()) != 0 {
		t.Fatalf("RetryAfter %v after %d requests and waits %v, want 1h after 1 and none",
			problem.RetryAfter, handler.requests(), slept.recorded())
	}
}

func TestNoRetryIsWaitedForThatTheContextDeadlineWouldCutShort(t *testing.T) {
	handler := &refusing{refusals: 1, status: http.StatusTooManyRequests, retryAfter: "20"}
	srv := httptest.NewServer(handler)
	defer srv.Close()
	c, slept := testClient(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	_, err := c.GetRun(ctx, "r1")
	if !errors.Is(err, ErrRateLimited) || len(slept.recorded()) != 0 {
		t.Fatalf("err %v and waits %v, want the problem at once", err, slept.recorded())
	}
}

func TestRetryAfterIsReadAsSecondsOrAnHTTPDate(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	cases := map[string]time.Duration{
		"0":                             0,
		" 7 ":                           7 * time.Second,
		"Tue, 01 Dec 2026 12:00:30 GMT": 30 * time.Second,
		"Tue, 01 Dec 2026 11:59:00 GMT": 0,
	}
	for value, want := range cases {
		if got, ok := parseRetryAfter(value, now); !ok || got != want {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v", value, got, ok, want)
		}
	}
	for _, value := range []string{"", "-1", "soon", "1.5"} {
		if got, ok := parseRetryAfter(value, now); ok {
			t.Errorf("parseRetryAfter(%q) = %v, want no value", value, got)
		}
	}
}

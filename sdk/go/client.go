package agentflow

// The Client and its one request path: every call is a request built here, sent with the current
// bearer (renewed once on a 401), retried on 429/503 within the RetryPolicy, and its answer decoded as
// JSON or as a Problem.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// DefaultAPIURL is the API a [Client] talks to when neither AF_API_URL nor [WithBaseURL] names one: the
// embedded stack's default address.
const DefaultAPIURL = "http://127.0.0.1:8080"

// Version is this SDK's version, sent in the User-Agent header.
const Version = "0.1.0"

// Client is a client of the AgentFlow HTTP API. It is safe for concurrent use by several goroutines.
type Client struct {
	baseURL       string
	http          *http.Client
	timeout       time.Duration
	retry         RetryPolicy
	pollInterval  time.Duration
	idleTimeout   time.Duration
	maxReconnects int
	creds         *credentials
	userAgent     string
	now           func() time.Time
	sleep         func(context.Context, time.Duration) error
}

// Option configures a [Client] made by [New]; options win over the environment, and a later option over
// an earlier one.
type Option func(*Client)

// WithBaseURL sets the API's base URL, e.g. http://127.0.0.1:8080 (default: AF_API_URL, else
// [DefaultAPIURL]).
func WithBaseURL(baseURL string) Option {
	return func(c *Client) { c.baseURL = baseURL }
}

// WithAPIKey makes the client exchange key (af_…) for an access token, refreshed as it nears its expiry
// or when the API refuses it. It replaces AF_TOKEN and any earlier [WithToken].
func WithAPIKey(key string) Option {
	return func(c *Client) { c.creds = &credentials{apiKey: key} }
}

// WithToken makes the client send token as its bearer, as it is (an access token got elsewhere; the API
// takes an API key this way too, checked on every request). It replaces AF_TOKEN and any earlier
// [WithAPIKey]; an empty token sends no Authorization header.
func WithToken(token string) Option {
	return func(c *Client) { c.creds = &credentials{static: token} }
}

// WithHTTPClient sends the requests through hc instead of a client of its own. Its Timeout should be
// zero: it would cut event streams short (see [WithTimeout] for requests that are not streams).
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.http = hc }
}

// WithTimeout bounds each exchange with the API that is not an event stream: sending the request and
// reading its answer, per attempt (default 30 s; 0 for none). A context's deadline bounds a whole call.
func WithTimeout(d time.Duration) Option {
	return func(c *Client) { c.timeout = d }
}

// WithRetryPolicy replaces [DefaultRetryPolicy].
func WithRetryPolicy(policy RetryPolicy) Option {
	return func(c *Client) { c.retry = policy }
}

// WithPollInterval sets how often [Client.WaitRun] reads the run when it polls instead of following its
// events (default 1 s).
func WithPollInterval(d time.Duration) Option {
	return func(c *Client) { c.pollInterval = d }
}

// WithStreamIdleTimeout drops and resumes an event stream that has sent nothing for d, so that a
// connection whose peer vanished without closing it does not stall a wait (default 60 s; 0 for never).
// Resuming loses no event.
func WithStreamIdleTimeout(d time.Duration) Option {
	return func(c *Client) { c.idleTimeout = d }
}

// WithStreamReconnects sets how many connections in a row may fail, or end without a new event, before
// an event stream gives up with a [*StreamError] (default 5); the same bound applies to the connection
// failures in a row that [Client.WaitRun] tolerates while polling.
func WithStreamReconnects(n int) Option {
	return func(c *Client) { c.maxReconnects = n }
}

// New makes a client configured by the environment (AF_API_URL; AF_TOKEN, exchanged for tokens when it
// is an API key, af_…, and sent as it is otherwise) and then by opts.
func New(opts ...Option) (*Client, error) {
	c := &Client{
		baseURL:       os.Getenv("AF_API_URL"),
		http:          &http.Client{},
		timeout:       30 * time.Second,
		retry:         DefaultRetryPolicy,
		pollInterval:  time.Second,
		idleTimeout:   60 * time.Second,
		maxReconnects: 5,
		userAgent:     "agentflow-go/" + Version,
		now:           time.Now,
		sleep:         sleep,
	}
	for _, opt := range opts {
		opt(c)
	}
	if c.creds == nil {
		c.creds = credentialsFrom(os.Getenv("AF_TOKEN"))
	}
	c.creds.lock = make(chan struct{}, 1)
	if c.baseURL == "" {
		c.baseURL = DefaultAPIURL
	}
	c.baseURL = strings.TrimRight(c.baseURL, "/")
	parsed, err := url.Parse(c.baseURL)
	if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" {
		return nil, fmt.Errorf("agentflow: the API URL %q is not an http(s) URL", c.baseURL)
	}
	if c.retry.MaxAttempts < 1 {
		c.retry.MaxAttempts = 1
	}
	return c, nil
}

// BaseURL is the API's base URL, without a trailing slash.
func (c *Client) BaseURL() string { return c.baseURL }

// request is one API operation: what to send; the answer is the caller's to read.
type request struct {
	method string
	path   string
	query  url.Values
	body   []byte
	header http.Header
	// anonymous requests (the token exchanges) carry no bearer and are not renewed on a 401.
	anonymous bool
	// stream requests (event streams) are not bounded by the client's timeout: they last as long as the run.
	stream bool
}

// jsonRequest is a request whose body is v as JSON.
func jsonRequest(method, path string, v any) (*request, error) {
	body, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("agentflow: cannot encode the body of %s %s: %w", method, path, err)
	}
	return &request{method: method, path: path, body: body}, nil
}

// call sends r and decodes a successful answer into out (unless nil); it returns the answer's status.
func (c *Client) call(ctx context.Context, r *request, out any) (int, error) {
	resp, cancel, err := c.do(ctx, r)
	if err != nil {
		return 0, err
	}
	defer cancel()
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, c.failure(ctx, &TransportError{URL: c.baseURL, Err: err})
	}
	if resp.StatusCode >= 300 {
		return resp.StatusCode, problemOf(resp.StatusCode, resp.Header, body)
	}
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			return resp.StatusCode, fmt.Errorf("agentflow: %s %s answered HTTP %d with a body that is not the JSON expected: %w",
				r.method, r.path, resp.StatusCode, err)
		}
	}
	return resp.StatusCode, nil
}

// do sends r until its answer is not a refusal worth retrying (429, 503) or the policy gives up, and
// returns that answer; the caller closes its body, then calls cancel.
func (c *Client) do(ctx context.Context, r *request) (*http.Response, context.CancelFunc, error) {
	for retry := 1; ; retry++ {
		attemptCtx, cancel := ctx, context.CancelFunc(func() {})
		if !r.stream && c.timeout > 0 {
			attemptCtx, cancel = context.WithTimeout(ctx, c.timeout)
		}
		resp, err := c.attempt(attemptCtx, r)
		if err != nil {
			cancel()
			return nil, nil, c.failure(ctx, err)
		}
		if !retryable(resp.StatusCode) {
			return resp, cancel, nil
		}
		wait, again := c.retry.delay(retry, resp.Header.Get("Retry-After"), c.now())
		if !again || outlasts(ctx, wait) {
			return resp, cancel, nil
		}
		discard(resp)
		cancel()
		if err := c.sleep(ctx, wait); err != nil {
			return nil, nil, err
		}
	}
}

// attempt sends r once with the current bearer, and once more with a renewed one when the API refuses
// that bearer (401) and the client can get another.
func (c *Client) attempt(ctx context.Context, r *request) (*http.Response, error) {
	if r.anonymous {
		return c.send(ctx, r, "")
	}
	bearer, err := c.bearer(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := c.send(ctx, r, bearer)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !c.creds.renewable() {
		return resp, err
	}
	discard(resp)
	if bearer, err = c.renew(ctx, bearer); err != nil {
		return nil, err
	}
	return c.send(ctx, r, bearer)
}

// send puts r on the wire once.
func (c *Client) send(ctx context.Context, r *request, bearer string) (*http.Response, error) {
	target := c.baseURL + r.path
	if len(r.query) > 0 {
		target += "?" + r.query.Encode()
	}
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, target, body)
	if err != nil {
		return nil, fmt.Errorf("agentflow: cannot build %s %s: %w", r.method, target, err)
	}
	for name, values := range r.header {
		req.Header[name] = values
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json")
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	req.Header.Set("User-Agent", c.userAgent)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &TransportError{URL: c.baseURL, Err: err}
	}
	return resp, nil
}

// failure is what a call returns for err: the caller's own context error when that context has ended
// (whatever layer noticed it first), else err as it is.
func (c *Client) failure(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	return err
}

// discard reads what is left of an answer that will not be used, so that its connection can be reused.
func discard(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

// segment escapes one path segment (a name, a version, a run id).
func segment(value string) string { return url.PathEscape(value) }

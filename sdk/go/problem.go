package agentflow

// The errors of the SDK: the API's problems (RFC 9457) with the kind their type names, and the failures
// that happen on this side of the wire.

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// ProblemTypePrefix begins every problem type the API sends, e.g. urn:agentflow:problem:not-found.
const ProblemTypePrefix = "urn:agentflow:problem:"

// Kind is what sort of refusal a [*Problem] is. The kinds are sentinels: test a returned error with
// errors.Is(err, agentflow.ErrNotFound).
type Kind string

// Error names the kind, so that a Kind is an error usable as an errors.Is target.
func (k Kind) Error() string { return string(k) }

const (
	// ErrNotFound means the named tool, workflow, agent, run or version does not exist (for this tenant). A
	// run that names an unknown tool, workflow or agent (types unknown-tool, unknown-workflow,
	// unknown-agent), and an agent whose model no deployment serves (model-not-found), are of this kind too.
	ErrNotFound Kind = "not found"
	// ErrValidation means the request itself is invalid: a name, a version, the JSON, a document or an input.
	ErrValidation Kind = "invalid request"
	// ErrConflict means the request contradicts what exists: another content for a version, a reused
	// idempotency key, a finished run, a run not waiting for that signal.
	ErrConflict Kind = "conflict"
	// ErrUnauthorized means the credentials are missing, invalid or expired.
	ErrUnauthorized Kind = "unauthorized"
	// ErrForbidden means the caller's role lacks the permission the request needs (the detail names it).
	ErrForbidden Kind = "forbidden"
	// ErrRateLimited means the caller is over a request rate or a quota; [Problem.RetryAfter] says how long to wait.
	ErrRateLimited Kind = "rate limited"
	// ErrUnavailable means that a part the API needs is down or busy; the same request may succeed later.
	ErrUnavailable Kind = "unavailable"
	// ErrServer means that the API failed to answer (HTTP 5xx other than 503).
	ErrServer Kind = "server error"
)

// The kinds of the problem types the API documents; any other type is judged by its status.
var kindOfSlug = map[string]Kind{
	"not-found":             ErrNotFound,
	"unknown-tool":          ErrNotFound,
	"unknown-workflow":      ErrNotFound,
	"unknown-agent":         ErrNotFound,
	"model-not-found":       ErrNotFound,
	"invalid-name":          ErrValidation,
	"bad-version":           ErrValidation,
	"malformed-json":        ErrValidation,
	"validation-error":      ErrValidation,
	"input-schema-mismatch": ErrValidation,
	"invalid-workflow":      ErrValidation,
	"unknown-signal":        ErrValidation,
	"duplicate-version":     ErrConflict,
	"idempotency-conflict":  ErrConflict,
	"run-finished":          ErrConflict,
	"not-waiting":           ErrConflict,
	"tenant-exists":         ErrConflict,
	"last-platform-admin":   ErrConflict,
	"unauthorized":          ErrUnauthorized,
	"forbidden":             ErrForbidden,
	"rate-limited":          ErrRateLimited,
	"quota-exceeded":        ErrRateLimited,
	"unavailable":           ErrUnavailable,
	"internal":              ErrServer,
}

// A proxy or an older server may answer without a problem type we know; the status still says enough.
var kindOfStatus = map[int]Kind{
	http.StatusBadRequest:          ErrValidation,
	http.StatusUnprocessableEntity: ErrValidation,
	http.StatusUnauthorized:        ErrUnauthorized,
	http.StatusForbidden:           ErrForbidden,
	http.StatusNotFound:            ErrNotFound,
	http.StatusConflict:            ErrConflict,
	http.StatusTooManyRequests:     ErrRateLimited,
	http.StatusServiceUnavailable:  ErrUnavailable,
}

// Problem is an error answer of the API (application/problem+json). Use errors.As to read its fields and
// errors.Is with a [Kind] to test what sort of refusal it is.
type Problem struct {
	// Type is the stable problem type, e.g. urn:agentflow:problem:validation-error ("about:blank" when
	// the answer carried none).
	Type string `json:"type"`
	// Title is the type's short human summary.
	Title string `json:"title"`
	// Status is the HTTP status of the answer.
	Status int `json:"status"`
	// Detail says what was wrong with this request, for a person.
	Detail string `json:"detail"`
	// Field is the offending field (a JSON path into the body, a query parameter or a header), if any.
	Field string `json:"field,omitempty"`
	// Problems lists every problem of a document when there are several, each at its own field.
	Problems []FieldProblem `json:"problems,omitempty"`
	// RetryAfter is how long the API asked to wait before the same request (its Retry-After header).
	RetryAfter time.Duration `json:"-"`
}

// FieldProblem is one of several problems of a document (see [Problem.Problems]).
type FieldProblem struct {
	// Type is the problem's short name, e.g. invalid-workflow or unknown-tool.
	Type string `json:"type"`
	// Field is where in the document the problem is.
	Field string `json:"field"`
	// Detail says what is wrong there.
	Detail string `json:"detail"`
}

// Error is the detail (or the title), with the field it concerns.
func (p *Problem) Error() string {
	message := p.Detail
	if message == "" {
		message = p.Title
	}
	if p.Field != "" {
		return fmt.Sprintf("%s (field: %s)", message, p.Field)
	}
	return message
}

// Slug is the problem type's short name, e.g. not-found.
func (p *Problem) Slug() string { return strings.TrimPrefix(p.Type, ProblemTypePrefix) }

// Kind is what sort of refusal the problem is: from its type when the SDK knows it, else from its status.
func (p *Problem) Kind() Kind {
	if kind, ok := kindOfSlug[p.Slug()]; ok {
		return kind
	}
	if kind, ok := kindOfStatus[p.Status]; ok {
		return kind
	}
	if p.Status >= 500 {
		return ErrServer
	}
	return Kind(fmt.Sprintf("HTTP %d", p.Status))
}

// Is reports whether target is the problem's [Kind], for errors.Is.
func (p *Problem) Is(target error) bool {
	kind, ok := target.(Kind)
	return ok && kind == p.Kind()
}

// problemOf reads an error answer: its problem document, or what its status says when it has none.
func problemOf(status int, header http.Header, body []byte) *Problem {
	problem := &Problem{}
	if err := json.Unmarshal(body, problem); err != nil || (problem.Type == "" && problem.Title == "") {
		reason := http.StatusText(status)
		if reason == "" {
			reason = "error"
		}
		problem = &Problem{Type: "about:blank", Title: reason, Detail: fmt.Sprintf("the API answered HTTP %d %s", status, reason)}
	}
	problem.Status = status
	if wait, ok := parseRetryAfter(header.Get("Retry-After"), time.Now()); ok {
		problem.RetryAfter = wait
	}
	return problem
}

// TransportError is a failure to reach the API, or a connection that broke before its answer.
type TransportError struct {
	// URL is the API's base URL.
	URL string
	// Err is the network error.
	Err error
}

// Error names the API that could not be reached.
func (e *TransportError) Error() string {
	return fmt.Sprintf("cannot reach the AgentFlow API at %s: %v", e.URL, e.Err)
}

// Unwrap returns the network error.
func (e *TransportError) Unwrap() error { return e.Err }

// StreamError says that a run's event stream could not be kept up (the connection kept failing, or the
// answer was no event stream); [Client.WaitRun] then polls the run instead.
type StreamError struct {
	// RunID is the run whose events were followed.
	RunID string
	// LastEventID is the id of the last event received ("" when none was).
	LastEventID string
	// Err is the last failure.
	Err error
}

// Error names the run and the last failure.
func (e *StreamError) Error() string {
	return fmt.Sprintf("the event stream of run %s broke off: %v", e.RunID, e.Err)
}

// Unwrap returns the last failure.
func (e *StreamError) Unwrap() error { return e.Err }

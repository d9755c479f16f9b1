package agentflow

// Runs: starting them (idempotently), reading and listing them (cursor pagination), cancelling them and
// sending them signals.

import (
	"context"
	"encoding/json"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// RunState is the state of a run: pending, then running, then succeeded, failed or cancelled.
type RunState string

const (
	// RunPending is a run accepted and not yet started.
	RunPending RunState = "pending"
	// RunRunning is a run under way.
	RunRunning RunState = "running"
	// RunSucceeded is a run that finished with an output.
	RunSucceeded RunState = "succeeded"
	// RunFailed is a run that finished with an error.
	RunFailed RunState = "failed"
	// RunCancelled is a run that was cancelled.
	RunCancelled RunState = "cancelled"
)

// Final reports whether a run in this state has finished.
func (s RunState) Final() bool {
	return s == RunSucceeded || s == RunFailed || s == RunCancelled
}

// Run is a run as the API shows it.
type Run struct {
	// ID is the run's id (a UUID).
	ID string `json:"id"`
	// Tenant owns the run.
	Tenant string `json:"tenant"`
	// Workflow is the workflow it runs, as name@version ("" for a run of a single tool or agent).
	Workflow string `json:"workflow"`
	// Tool is the tool it runs, as name@version ("" for a run of a workflow or an agent).
	Tool string `json:"tool"`
	// Agent is the agent it runs, as name@version ("" for a run of a workflow or a tool).
	Agent string `json:"agent"`
	// State is where the run is.
	State RunState `json:"state"`
	// Input is the run's input document.
	Input json.RawMessage `json:"input"`
	// Output is the run's output document once it has succeeded (JSON null before).
	Output json.RawMessage `json:"output"`
	// Error says why the run failed or was cancelled.
	Error string `json:"error"`
	// CreatedAt is when the run was accepted.
	CreatedAt time.Time `json:"created_at"`
	// UpdatedAt is when its state last changed.
	UpdatedAt time.Time `json:"updated_at"`
	// FinishedAt is when it finished (nil while it has not).
	FinishedAt *time.Time `json:"finished_at"`
	// Tasks are the run's tasks; only [Client.GetRun] and [Client.WaitRun] fill them in.
	Tasks []Task `json:"tasks,omitempty"`
	// Usage is the model usage over the run's tasks (nil when no task reported any, and in lists).
	Usage *Usage `json:"usage,omitempty"`
}

// Task is one attempt-tracked step instance of a run: a tool call, a timer or a signal wait.
type Task struct {
	// ID is the task's id.
	ID string `json:"id"`
	// Step is the workflow step (state, node or DAG step) the task belongs to.
	Step string `json:"step"`
	// Element tells the step's instances apart (the item of a loop, say).
	Element string `json:"element"`
	// Tool is the tool it calls, as name@version.
	Tool string `json:"tool"`
	// Queue is the queue it was sent to.
	Queue string `json:"queue"`
	// Attempt counts its attempts, from 1.
	Attempt int `json:"attempt"`
	// State is queued, running, succeeded, failed, cancelled or dead (attempts exhausted).
	State string `json:"state"`
	// Input is the task's input document.
	Input json.RawMessage `json:"input"`
	// Output is its output document (JSON null until it has one).
	Output json.RawMessage `json:"output"`
	// Error says why it failed.
	Error string `json:"error"`
	// Detail is what the worker reported beside the output (logs, model usage), as JSON.
	Detail json.RawMessage `json:"detail"`
	// WorkerID is the worker that ran its latest attempt.
	WorkerID string `json:"worker_id"`
	// CreatedAt is when the task was made.
	CreatedAt time.Time `json:"created_at"`
	// StartedAt is when its latest attempt started.
	StartedAt *time.Time `json:"started_at"`
	// FinishedAt is when it finished.
	FinishedAt *time.Time `json:"finished_at"`
	// Sandbox is what the latest finished attempt's sandbox used (nil before one finished).
	Sandbox *SandboxUsage `json:"sandbox"`
}

// SandboxUsage is the sandbox of a task's attempt, what it used and where its time went.
type SandboxUsage struct {
	// Kind is the sandbox backend: runsc, docker or process.
	Kind string `json:"kind"`
	// CPUSeconds is the CPU time the tool used.
	CPUSeconds *float64 `json:"cpu_seconds"`
	// MaxRSSKB is the tool's peak resident memory, in KiB.
	MaxRSSKB *int64 `json:"max_rss_kb"`
	// Timing splits the attempt's time into waiting, starting and running.
	Timing SandboxTiming `json:"timing"`
}

// SandboxTiming is where an attempt's time went, in seconds.
type SandboxTiming struct {
	// QueueSeconds is the time from queued to picked up by a worker.
	QueueSeconds *float64 `json:"queue_seconds"`
	// StartSeconds is the time to start the sandbox.
	StartSeconds *float64 `json:"start_seconds"`
	// RunSeconds is the time the tool ran.
	RunSeconds *float64 `json:"run_seconds"`
}

// Usage is model usage summed over a run's tasks.
type Usage struct {
	// InputTokens is the total of input (prompt) tokens.
	InputTokens int64 `json:"input_tokens"`
	// OutputTokens is the total of output (completion) tokens.
	OutputTokens int64 `json:"output_tokens"`
	// ByModel splits the totals per model.
	ByModel map[string]TokenCounts `json:"by_model"`
}

// TokenCounts are the tokens of one model.
type TokenCounts struct {
	// InputTokens is the model's input tokens.
	InputTokens int64 `json:"input_tokens"`
	// OutputTokens is the model's output tokens.
	OutputTokens int64 `json:"output_tokens"`
}

// RunRequest says what to run: exactly one of Workflow, Tool and Agent, each named name or name@version.
type RunRequest struct {
	// Workflow is the workflow to run.
	Workflow string `json:"workflow,omitempty"`
	// Tool is the single tool to run.
	Tool string `json:"tool,omitempty"`
	// Agent is the agent to run on its own: its model turns and the tool calls it asks for are the run's tasks.
	Agent string `json:"agent,omitempty"`
	// Input is the run's input: anything that encodes to JSON (omitted when nil).
	Input any `json:"input,omitempty"`
	// Queue sends the run's tasks to this queue instead of each tool's own.
	Queue string `json:"queue,omitempty"`
	// IdempotencyKey makes the start safe to repeat: the same key returns the run it started first (sent
	// as the Idempotency-Key header). The same key with another request is refused ([ErrConflict]).
	IdempotencyKey string `json:"-"`
}

// StartedRun is the answer to [Client.StartRun].
type StartedRun struct {
	// ID is the run's id.
	ID string `json:"id"`
	// State is the run's state as the answer was made: a repeat of a finished run says how it ended.
	State RunState `json:"state"`
	// Created is false when the idempotency key named a run started before, which this is.
	Created bool `json:"created"`
}

// StartRun starts a run of a workflow, of a single tool or of a single agent.
func (c *Client) StartRun(ctx context.Context, run RunRequest) (*StartedRun, error) {
	r, err := jsonRequest(http.MethodPost, "/v1/runs", run)
	if err != nil {
		return nil, err
	}
	if run.IdempotencyKey != "" {
		r.header = http.Header{"Idempotency-Key": {run.IdempotencyKey}}
	}
	started := &StartedRun{}
	if _, err := c.call(ctx, r, started); err != nil {
		return nil, err
	}
	return started, nil
}

// GetRun reads a run with its tasks.
func (c *Client) GetRun(ctx context.Context, runID string) (*Run, error) {
	run := &Run{}
	if _, err := c.call(ctx, &request{method: http.MethodGet, path: "/v1/runs/" + segment(runID)}, run); err != nil {
		return nil, err
	}
	return run, nil
}

// RunFilter chooses the runs [Client.ListRuns] and [Client.Runs] list.
type RunFilter struct {
	// State keeps the runs in this state only ("" for all).
	State RunState
	// Limit is the page size, 1 to 500 (0 for the API's default, 50).
	Limit int
	// Cursor starts the page after the run it names: pass [RunPage.NextCursor] ("" for the first page), with
	// the same filters.
	Cursor string
	// Workflow keeps the runs of this workflow only, named name or name@version ("" for all).
	Workflow string
	// Since keeps the runs created at or after this time (the zero time for all).
	Since time.Time
}

// RunPage is one page of runs, newest first.
type RunPage struct {
	// Items are the page's runs (without their tasks).
	Items []Run `json:"items"`
	// NextCursor continues the list in [RunFilter.Cursor]; "" on the last page.
	NextCursor string `json:"next_cursor"`
}

// ListRuns reads one page of the tenant's runs, newest first.
func (c *Client) ListRuns(ctx context.Context, filter RunFilter) (*RunPage, error) {
	query := url.Values{}
	if filter.State != "" {
		query.Set("state", string(filter.State))
	}
	if filter.Limit != 0 {
		query.Set("limit", strconv.Itoa(filter.Limit))
	}
	if filter.Cursor != "" {
		query.Set("cursor", filter.Cursor)
	}
	if filter.Workflow != "" {
		query.Set("workflow", filter.Workflow)
	}
	if !filter.Since.IsZero() {
		query.Set("since", filter.Since.UTC().Format(time.RFC3339Nano))
	}
	page := &RunPage{}
	if _, err := c.call(ctx, &request{method: http.MethodGet, path: "/v1/runs", query: query}, page); err != nil {
		return nil, err
	}
	return page, nil
}

// Runs iterates over every run that filter chooses, newest first, reading filter.Limit per request and
// following the cursors. An error ends the iteration, as its last pair.
func (c *Client) Runs(ctx context.Context, filter RunFilter) iter.Seq2[Run, error] {
	return func(yield func(Run, error) bool) {
		for {
			page, err := c.ListRuns(ctx, filter)
			if err != nil {
				yield(Run{}, err)
				return
			}
			for _, run := range page.Items {
				if !yield(run, nil) {
					return
				}
			}
			if page.NextCursor == "" {
				return
			}
			filter.Cursor = page.NextCursor
		}
	}
}

// CancelRun cancels a run: its unfinished tasks are cancelled and late results ignored. It answers the
// run (without its tasks); a run that has finished already is refused ([ErrConflict], run-finished).
func (c *Client) CancelRun(ctx context.Context, runID string) (*Run, error) {
	run := &Run{}
	path := "/v1/runs/" + segment(runID) + "/cancel"
	if _, err := c.call(ctx, &request{method: http.MethodPost, path: path}, run); err != nil {
		return nil, err
	}
	return run, nil
}

// Signalled is the answer to [Client.SignalRun].
type Signalled struct {
	// RunID is the run signalled.
	RunID string `json:"run_id"`
	// Signal is the signal's name.
	Signal string `json:"signal"`
	// Step is the waiting step that took it.
	Step string `json:"step"`
}

// SignalRun sends the signal name, with data (anything that encodes to JSON; nil for none), to a run
// waiting for it; the data becomes the waiting step's output. A signal the workflow does not take is
// refused with [ErrValidation] (unknown-signal), one it takes but does not wait for now with
// [ErrConflict] (not-waiting).
func (c *Client) SignalRun(ctx context.Context, runID, name string, data any) (*Signalled, error) {
	r, err := jsonRequest(http.MethodPost, "/v1/runs/"+segment(runID)+"/signal", map[string]any{"name": name, "data": data})
	if err != nil {
		return nil, err
	}
	signalled := &Signalled{}
	if _, err := c.call(ctx, r, signalled); err != nil {
		return nil, err
	}
	return signalled, nil
}

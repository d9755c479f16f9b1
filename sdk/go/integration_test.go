package agentflow

// Integration tests against a real AgentFlow stack, named by AF_API_URL and AF_TOKEN (an API key): they
// are skipped only when AF_API_URL is unset. tests/test_go_sdk.py starts the stack, registers the
// example tools and workflows (the approval workflow among them) and runs them.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// echoTool answers {"echo": its input}.
var echoTool = map[string]any{
	"name":        "go-sdk-echo",
	"version":     "1.0.0",
	"description": "Answers its input, for the Go SDK's tests.",
	"runtime": map[string]any{
		"command": []string{"python3", "main.py"},
		"files":   map[string]string{"main.py": "import json, sys\njson.dump({'echo': json.load(sys.stdin)}, sys.stdout)\n"},
	},
	"input_schema": map[string]any{
		"type": "object", "required": []string{"text"},
		"properties": map[string]any{"text": map[string]string{"type": "string"}},
	},
	"limits": map[string]int{"wall_seconds": 20, "memory_mb": 128},
}

// gateWorkflow waits for the signal "go", then echoes who sent it.
var gateWorkflow = map[string]any{
	"name":    "go-sdk-gate",
	"version": "1.0.0",
	"kind":    "fsm",
	"initial": "ask",
	"states": map[string]any{
		"ask": map[string]any{
			"wait":        map[string]any{"signals": []string{"go"}},
			"transitions": []any{map[string]string{"signal": "go", "to": "echo"}},
		},
		"echo": map[string]any{
			"tool":        "go-sdk-echo@1.0.0",
			"input":       map[string]string{"text": "$.steps.ask.output.data.by"},
			"transitions": []any{map[string]string{"to": "done"}},
		},
		"done": map[string]any{"final": true, "output": map[string]string{"by": "$.steps.echo.output.echo.text"}},
	},
}

// stack is a client of the stack under test (configured by the environment), with the Go test tool and
// workflow registered, and a context bounding the test.
func stack(t *testing.T) (*Client, context.Context) {
	t.Helper()
	if os.Getenv("AF_API_URL") == "" {
		t.Skip("AF_API_URL is unset: no AgentFlow stack to test against (make test sets it)")
	}
	c, err := New()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	if _, err := c.RegisterTool(ctx, echoTool); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ApplyWorkflow(ctx, gateWorkflow); err != nil {
		t.Fatal(err)
	}
	return c, ctx
}

// uniqueKey is an idempotency key no other test run uses.
func uniqueKey(t *testing.T) string {
	return fmt.Sprintf("%s-%d", t.Name(), time.Now().UnixNano())
}

// untilEvent follows a run's events until one of type kind.
func untilEvent(t *testing.T, ctx context.Context, c *Client, runID, kind string) Event {
	t.Helper()
	for event, err := range c.Events(ctx, runID, "") {
		if err != nil {
			t.Fatal(err)
		}
		if event.Type == kind {
			return event
		}
	}
	t.Fatalf("run %s ended without an event %s", runID, kind)
	return Event{}
}

func asJSON(t *testing.T, raw json.RawMessage) any {
	t.Helper()
	var value any
	if err := json.Unmarshal(raw, &value); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	return value
}

func TestStackStoresAToolAndAWorkflowOnceAndReadsThemBack(t *testing.T) {
	c, ctx := stack(t)

	again, err := c.RegisterTool(ctx, echoTool)
	if err != nil || again.Created || again.Name != "go-sdk-echo" || again.Version != "1.0.0" || again.Digest == "" {
		t.Fatalf("registered again: %+v (%v), want the stored version, not created", again, err)
	}
	tool, err := c.GetTool(ctx, "go-sdk-echo", "")
	if err != nil || tool.Digest != again.Digest || tool.CreatedAt.IsZero() {
		t.Fatalf("latest tool %+v (%v), want the registered version", tool, err)
	}
	workflow, err := c.GetWorkflow(ctx, "go-sdk-gate", "1.0.0")
	if err != nil || workflow.Kind != "fsm" || len(workflow.Spec) == 0 {
		t.Fatalf("workflow %+v (%v), want the fsm applied", workflow, err)
	}
	workflows, err := c.ListWorkflows(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, entry := range workflows {
		names[entry.Name] = true
	}
	if !names["go-sdk-gate"] || !names["approval"] {
		t.Fatalf("workflows %v, want go-sdk-gate and the examples' approval", names)
	}
}

func TestStackRunsStartedTwiceWithOneKeyAreOneRunThatSucceeds(t *testing.T) {
	c, ctx := stack(t)
	request := RunRequest{Tool: "go-sdk-echo@1.0.0", Input: map[string]string{"text": "hello"}, IdempotencyKey: uniqueKey(t)}

	first, err := c.StartRun(ctx, request)
	if err != nil {
		t.Fatal(err)
	}
	second, err := c.StartRun(ctx, request)
	if err != nil || second.ID != first.ID || !first.Created || second.Created {
		t.Fatalf("started %+v then %+v (%v), want one run, created once", first, second, err)
	}
	run, err := c.WaitRun(ctx, first.ID)
	if err != nil {
		t.Fatal(err)
	}
	if run.State != RunSucceeded || run.FinishedAt == nil || len(run.Tasks) != 1 || run.Tasks[0].State != "succeeded" {
		t.Fatalf("run %+v, want succeeded with its one task", run)
	}
	if got, want := asJSON(t, run.Output), any(map[string]any{"echo": map[string]any{"text": "hello"}}); !reflect.DeepEqual(got, want) {
		t.Fatalf("output %v, want %v", got, want)
	}
}

func TestStackEventsReplayAFinishedRunAndResumeAfterAnID(t *testing.T) {
	c, ctx := stack(t)
	started, err := c.StartRun(ctx, RunRequest{Tool: "go-sdk-echo", Input: map[string]string{"text": "events"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.WaitRun(ctx, started.ID); err != nil {
		t.Fatal(err)
	}

	var events []Event
	for event, err := range c.Events(ctx, started.ID, "") {
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, event)
	}
	if len(events) < 3 || events[0].Type != "run.created" || events[len(events)-1].Type != "run.succeeded" {
		t.Fatalf("events %+v, want run.created first and run.succeeded last", events)
	}
	for i, event := range events {
		if event.Seq != int64(i+1) || event.ID != fmt.Sprint(event.Seq) || event.At.IsZero() {
			t.Fatalf("event %d is %+v, want numbered in order with its id and time", i, event)
		}
	}

	var rest []Event
	for event, err := range c.Events(ctx, started.ID, events[1].ID) {
		if err != nil {
			t.Fatal(err)
		}
		rest = append(rest, event)
	}
	if len(rest) != len(events)-2 || rest[0].Seq != 3 {
		t.Fatalf("events after %s: %+v, want the %d after it", events[1].ID, rest, len(events)-2)
	}
}

func TestStackListsRunsByStatePageByPageWithCursors(t *testing.T) {
	c, ctx := stack(t)
	mine := map[string]bool{}
	var first time.Time
	for i := range 3 {
		started, err := c.StartRun(ctx, RunRequest{Tool: "go-sdk-echo@1.0.0", Input: map[string]string{"text": fmt.Sprint(i)}})
		if err != nil {
			t.Fatal(err)
		}
		done, err := c.WaitRun(ctx, started.ID)
		if err != nil {
			t.Fatal(err)
		}
		if first.IsZero() {
			first = done.CreatedAt
		}
		mine[started.ID] = true
	}

	since, err := c.ListRuns(ctx, RunFilter{Since: first, Limit: 500})
	if err != nil {
		t.Fatal(err)
	}
	found := 0
	for _, run := range since.Items {
		if mine[run.ID] {
			found++
		}
		if run.CreatedAt.Before(first) {
			t.Fatalf("listed %+v, created before %v", run, first)
		}
	}
	if found != len(mine) {
		t.Fatalf("found %d of my %d runs among those since the first of them", found, len(mine))
	}
	none, err := c.ListRuns(ctx, RunFilter{Workflow: "go-sdk-no-such-workflow"})
	if err != nil || len(none.Items) != 0 {
		t.Fatalf("the runs of a workflow never run: %+v (%v), want none", none, err)
	}

	page, err := c.ListRuns(ctx, RunFilter{Limit: 2})
	if err != nil || len(page.Items) != 2 || page.NextCursor == "" {
		t.Fatalf("first page %+v (%v), want 2 runs and a cursor", page, err)
	}
	next, err := c.ListRuns(ctx, RunFilter{Limit: 2, Cursor: page.NextCursor})
	if err != nil || len(next.Items) == 0 || next.Items[0].ID == page.Items[1].ID || next.Items[0].CreatedAt.After(page.Items[1].CreatedAt) {
		t.Fatalf("second page %+v (%v), want the runs older than the first page's", next, err)
	}

	// Filters: no workflow's runs are these tool runs, and nothing was created after the last of them.
	byWorkflow, err := c.ListRuns(ctx, RunFilter{Workflow: "go-sdk-gate"})
	if err != nil {
		t.Fatal(err)
	}
	for _, run := range byWorkflow.Items {
		if run.Workflow != "go-sdk-gate@1.0.0" || mine[run.ID] {
			t.Fatalf("listed %+v among the runs of go-sdk-gate", run)
		}
	}
	later, err := c.ListRuns(ctx, RunFilter{Since: time.Now().Add(time.Hour)})
	if err != nil || len(later.Items) != 0 {
		t.Fatalf("runs created in an hour: %+v (%v), want none", later, err)
	}

	seen, listed := 0, 0
	for run, err := range c.Runs(ctx, RunFilter{State: RunSucceeded, Limit: 2}) {
		if err != nil {
			t.Fatal(err)
		}
		if run.State != RunSucceeded {
			t.Fatalf("listed %+v among the succeeded runs", run)
		}
		listed++
		if mine[run.ID] {
			seen++
		}
		if seen == len(mine) {
			break
		}
	}
	if seen != len(mine) || listed < len(mine) {
		t.Fatalf("found %d of my %d runs among %d listed", seen, len(mine), listed)
	}
}

func TestStackASignalWithDataMovesAWaitingRunOn(t *testing.T) {
	c, ctx := stack(t)
	started, err := c.StartRun(ctx, RunRequest{Workflow: "approval", Input: map[string]string{"text": "We ship the Go SDK today."}})
	if err != nil {
		t.Fatal(err)
	}
	untilEvent(t, ctx, c, started.ID, "signal.waiting")

	_, err = c.SignalRun(ctx, started.ID, "launch", nil)
	var problem *Problem
	if !errors.As(err, &problem) || !errors.Is(err, ErrValidation) || problem.Slug() != "unknown-signal" || problem.Field != "name" {
		t.Fatalf("an unknown signal: %v, want the unknown-signal problem at field name", err)
	}
	signalled, err := c.SignalRun(ctx, started.ID, "approve", map[string]string{"by": "go-sdk"})
	if err != nil || signalled.Step != "await_approval" || signalled.Signal != "approve" {
		t.Fatalf("signalled %+v (%v), want taken by await_approval", signalled, err)
	}
	run, err := c.WaitRun(ctx, started.ID)
	if err != nil || run.State != RunSucceeded {
		t.Fatalf("run %+v (%v), want it succeeded", run, err)
	}
	if output := asJSON(t, run.Output).(map[string]any); output["approved_by"] != "go-sdk" {
		t.Fatalf("output %v, want approved_by go-sdk", output)
	}
	if _, err := c.SignalRun(ctx, started.ID, "approve", nil); !errors.Is(err, ErrConflict) {
		t.Fatalf("a signal to a finished run: %v, want a conflict", err)
	}
}

func TestStackCancelsARunWaitingForASignal(t *testing.T) {
	c, ctx := stack(t)
	started, err := c.StartRun(ctx, RunRequest{Workflow: "go-sdk-gate"})
	if err != nil {
		t.Fatal(err)
	}
	untilEvent(t, ctx, c, started.ID, "signal.waiting")

	cancelled, err := c.CancelRun(ctx, started.ID)
	if err != nil || cancelled.State != RunCancelled {
		t.Fatalf("cancelled %+v (%v), want state cancelled", cancelled, err)
	}
	run, err := c.WaitRun(ctx, started.ID)
	if err != nil || run.State != RunCancelled || run.FinishedAt == nil {
		t.Fatalf("run %+v (%v), want it finished cancelled", run, err)
	}
	_, err = c.CancelRun(ctx, started.ID)
	var problem *Problem
	if !errors.As(err, &problem) || !errors.Is(err, ErrConflict) || problem.Slug() != "run-finished" || problem.Status != 409 {
		t.Fatalf("cancelling again: %v, want the 409 run-finished problem", err)
	}
}

func TestStackAnswersBadRequestsWithTypedProblems(t *testing.T) {
	c, ctx := stack(t)
	var problem *Problem

	_, err := c.GetRun(ctx, "00000000-0000-4000-8000-000000000000")
	if !errors.As(err, &problem) || !errors.Is(err, ErrNotFound) || problem.Status != 404 || problem.Field != "id" {
		t.Fatalf("an unknown run: %v, want 404 not-found at field id", err)
	}
	_, err = c.StartRun(ctx, RunRequest{Workflow: "no-such-workflow"})
	if !errors.As(err, &problem) || !errors.Is(err, ErrNotFound) || problem.Slug() != "unknown-workflow" || problem.Status != 422 {
		t.Fatalf("an unknown workflow: %v, want 422 unknown-workflow", err)
	}
	_, err = c.StartRun(ctx, RunRequest{Tool: "go-sdk-echo@1.0.0", Input: map[string]int{"text": 1}})
	if !errors.As(err, &problem) || !errors.Is(err, ErrValidation) || problem.Slug() != "input-schema-mismatch" {
		t.Fatalf("an input against the schema: %v, want input-schema-mismatch", err)
	}
	_, err = c.ListRuns(ctx, RunFilter{State: "sleeping"})
	if !errors.As(err, &problem) || !errors.Is(err, ErrValidation) || problem.Field != "state" {
		t.Fatalf("an unknown state: %v, want a validation problem at field state", err)
	}
	broken := map[string]any{
		"name": "go-sdk-broken", "version": "1.0.0", "kind": "fsm", "initial": "a",
		"states": map[string]any{
			"a": map[string]any{"tool": "no-such-tool@1.0.0", "transitions": []any{map[string]string{"to": "nowhere"}}},
		},
	}
	_, err = c.ApplyWorkflow(ctx, broken)
	if !errors.As(err, &problem) || !errors.Is(err, ErrValidation) || len(problem.Problems) < 2 {
		t.Fatalf("a workflow with two problems: %v (%+v), want each in Problems", err, problem)
	}
}

func TestStackExchangesTheKeyAndRefreshesARefusedOrExpiringToken(t *testing.T) {
	c, ctx := stack(t)
	if !c.creds.renewable() {
		t.Fatal("AF_TOKEN should be an API key here, exchanged for tokens")
	}
	first := c.creds.access

	c.creds.access = "eyJ.not-a-token" // as a token the API no longer takes: it answers 401
	if _, err := c.ListTools(ctx); err != nil {
		t.Fatalf("a refused access token was not refreshed: %v", err)
	}
	second := c.creds.access
	c.now = func() time.Time { return time.Now().Add(time.Hour) } // past the expiry
	if _, err := c.ListTools(ctx); err != nil {
		t.Fatal(err)
	}
	if third := c.creds.access; first == second || second == third || c.creds.refresh == "" {
		t.Fatalf("access tokens %q, %q, %q: want a new one after each refresh", first, second, third)
	}

	wrong, err := New(WithAPIKey("af_000000000000_wrong"))
	if err != nil {
		t.Fatal(err)
	}
	var problem *Problem
	_, err = wrong.ListTools(ctx)
	if !errors.As(err, &problem) || !errors.Is(err, ErrUnauthorized) || problem.Field != "api_key" {
		t.Fatalf("a wrong key: %v, want 401 unauthorized at field api_key", err)
	}
}

func TestStackAppliesAnAgentAndRunsItToItsAnswer(t *testing.T) {
	c, ctx := stack(t)
	// A scripted model of this tenant's own, named (not a tier), so that no other test's tier changes.
	model := map[string]any{"name": "go-sdk-mock", "provider": "mock", "options": map[string]any{
		"turns": []any{map[string]string{"content": "forty-two"}},
	}}
	r, err := jsonRequest("POST", "/v1/models", model)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.call(ctx, r, nil); err != nil {
		t.Fatal(err)
	}
	agent := map[string]any{
		"name": "go-sdk-agent", "version": "1.0.0", "model": "go-sdk-mock",
		"instructions": "Answer {{$.input.question}}", "tools": []string{"go-sdk-echo@1.0.0"},
	}
	applied, err := c.ApplyAgent(ctx, agent)
	if err != nil || applied.Name != "go-sdk-agent" {
		t.Fatalf("applied %+v (%v), want the agent", applied, err)
	}
	got, err := c.GetAgent(ctx, "go-sdk-agent", "")
	if err != nil || got.Digest != applied.Digest {
		t.Fatalf("latest agent %+v (%v), want the applied version", got, err)
	}
	listed, err := c.ListAgents(ctx)
	if err != nil || !containsEntry(listed, "go-sdk-agent") {
		t.Fatalf("agents %+v (%v), want go-sdk-agent among them", listed, err)
	}

	started, err := c.StartRun(ctx, RunRequest{Agent: "go-sdk-agent@1.0.0", Input: map[string]string{"question": "why?"}})
	if err != nil {
		t.Fatal(err)
	}
	run, err := c.WaitRun(ctx, started.ID)
	if err != nil {
		t.Fatal(err)
	}
	if run.State != RunSucceeded || run.Agent != "go-sdk-agent@1.0.0" || run.Workflow != "" {
		t.Fatalf("agent run %+v, want it succeeded as a run of the agent", run)
	}
	if !strings.Contains(string(run.Output), "forty-two") {
		t.Fatalf("agent run output %s, want the model's answer", run.Output)
	}

	_, err = c.StartRun(ctx, RunRequest{Agent: "go-sdk-no-such-agent"})
	var problem *Problem
	if !errors.As(err, &problem) || !errors.Is(err, ErrNotFound) || problem.Slug() != "unknown-agent" {
		t.Fatalf("unknown agent: %v, want an unknown-agent problem", err)
	}
}

func containsEntry(entries []Entry, name string) bool {
	for _, entry := range entries {
		if entry.Name == name {
			return true
		}
	}
	return false
}

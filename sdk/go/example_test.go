package agentflow_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	agentflow "github.com/agentflow/agentflow/sdk/go"
)

// A client configured by AF_API_URL and AF_TOKEN starts a run of a workflow, safe to repeat with the same
// idempotency key, and waits for it to finish.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	af, err := agentflow.New()
	if err != nil {
		log.Fatal(err)
	}
	run, err := af.StartRun(ctx, agentflow.RunRequest{
		Workflow:       "doc-review",
		Input:          map[string]string{"text": "AgentFlow runs tools in sandboxes."},
		IdempotencyKey: "doc-1",
	})
	if err != nil {
		log.Fatal(err)
	}
	done, err := af.WaitRun(ctx, run.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(done.State, string(done.Output))
}

// Errors of the API are *Problem values: errors.Is tells their kind, errors.As gives their fields.
func ExampleProblem() {
	af, err := agentflow.New(agentflow.WithBaseURL("http://127.0.0.1:8080"), agentflow.WithAPIKey("af_..."))
	if err != nil {
		log.Fatal(err)
	}
	_, err = af.StartRun(context.Background(), agentflow.RunRequest{Workflow: "no-such-workflow"})
	var problem *agentflow.Problem
	switch {
	case errors.Is(err, agentflow.ErrNotFound) && errors.As(err, &problem):
		fmt.Println(problem.Slug(), "at", problem.Field)
	case errors.Is(err, agentflow.ErrRateLimited) && errors.As(err, &problem):
		fmt.Println("try again in", problem.RetryAfter)
	case err != nil:
		log.Fatal(err)
	}
}

// Runs iterates over every run in a state, following the cursors page by page.
func ExampleClient_Runs() {
	af, err := agentflow.New()
	if err != nil {
		log.Fatal(err)
	}
	for run, err := range af.Runs(context.Background(), agentflow.RunFilter{State: agentflow.RunFailed, Limit: 100}) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(run.ID, run.Workflow, run.Error)
	}
}

// A run waiting for a signal (human in the loop) is sent it with its data.
func ExampleClient_SignalRun() {
	af, err := agentflow.New()
	if err != nil {
		log.Fatal(err)
	}
	ctx := context.Background()
	run, err := af.StartRun(ctx, agentflow.RunRequest{Workflow: "approval", Input: map[string]string{"text": "We ship today."}})
	if err != nil {
		log.Fatal(err)
	}
	for event, err := range af.Events(ctx, run.ID, "") {
		if err != nil {
			log.Fatal(err)
		}
		if event.Type == "signal.waiting" {
			break
		}
	}
	if _, err := af.SignalRun(ctx, run.ID, "approve", map[string]string{"by": "ana"}); err != nil {
		log.Fatal(err)
	}
}

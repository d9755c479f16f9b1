package agentflow

import (
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"
)

func TestAProblemDocumentBecomesAProblemWithItsKindAndFields(t *testing.T) {
	body := []byte(`{"type":"urn:agentflow:problem:invalid-workflow","title":"Invalid workflow","status":422,
		"detail":"states.a: no such state; states.b: unknown tool","field":"states.a",
		"problems":[{"field":"states.a","detail":"no such state","type":"invalid-workflow"},
		            {"field":"states.b","detail":"unknown tool","type":"unknown-tool"}]}`)
	err := fmt.Errorf("applying: %w", problemOf(422, http.Header{"Retry-After": {"3"}}, body))

	var problem *Problem
	if !errors.As(err, &problem) {
		t.Fatalf("errors.As found no *Problem in %v", err)
	}
	if problem.Slug() != "invalid-workflow" || problem.Status != 422 || problem.Field != "states.a" ||
		len(problem.Problems) != 2 || problem.Problems[1].Type != "unknown-tool" || problem.RetryAfter != 3*time.Second {
		t.Fatalf("problem %+v, want every field of the document", problem)
	}
	if !errors.Is(err, ErrValidation) || errors.Is(err, ErrNotFound) {
		t.Fatalf("%v: want of kind ErrValidation alone", err)
	}
	if want := "states.a: no such state; states.b: unknown tool (field: states.a)"; problem.Error() != want {
		t.Fatalf("message %q, want %q", problem.Error(), want)
	}
}

func TestAProblemsKindComesFromItsTypeThenFromItsStatus(t *testing.T) {
	cases := []struct {
		status int
		body   string
		kind   Kind
	}{
		{422, `{"type":"urn:agentflow:problem:unknown-workflow","title":"Unknown workflow"}`, ErrNotFound},
		{404, `{"type":"urn:agentflow:problem:not-found","title":"Not found"}`, ErrNotFound},
		{409, `{"type":"urn:agentflow:problem:not-waiting","title":"x"}`, ErrConflict},
		{403, `{"type":"urn:agentflow:problem:forbidden","title":"Forbidden"}`, ErrForbidden},
		{429, `{"type":"urn:agentflow:problem:quota-exceeded","title":"Quota exceeded"}`, ErrRateLimited},
		{409, `{"type":"urn:example:something-new","title":"New"}`, ErrConflict},
		{502, `<html>Bad Gateway</html>`, ErrServer},
		{503, ``, ErrUnavailable},
	}
	for _, tc := range cases {
		problem := problemOf(tc.status, http.Header{}, []byte(tc.body))
		if !errors.Is(problem, tc.kind) || problem.Kind() != tc.kind {
			t.Errorf("HTTP %d %s is %q, want %q", tc.status, tc.body, problem.Kind(), tc.kind)
		}
	}
}

func TestAnAnswerWithoutAProblemDocumentSaysItsStatus(t *testing.T) {
	problem := problemOf(502, http.Header{}, []byte("<html>oops</html>"))
	if problem.Type != "about:blank" || problem.Title != "Bad Gateway" || problem.Error() != "the API answered HTTP 502 Bad Gateway" {
		t.Fatalf("problem %+v, want one made of the status", problem)
	}
}

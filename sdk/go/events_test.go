package agentflow

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// eventServer serves one run's event stream, one scripted connection after another, and the run itself.
type eventServer struct {
	mu          sync.Mutex
	connections []func(w http.ResponseWriter, r *http.Request)
	lastIDs     []string
	runStates   []string
	reads       int
}

func (s *eventServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	switch r.URL.Path {
	case "/v1/runs/r1/events":
		s.lastIDs = append(s.lastIDs, r.Header.Get("Last-Event-ID"))
		serve := s.connections[min(len(s.lastIDs), len(s.connections))-1]
		s.mu.Unlock()
		serve(w, r)
	case "/v1/runs/r1":
		state := s.runStates[min(s.reads, len(s.runStates)-1)]
		s.reads++
		s.mu.Unlock()
		_, _ = fmt.Fprintf(w, `{"id":"r1","state":%q,"tasks":[]}`, state)
	default:
		s.mu.Unlock()
		http.NotFound(w, r)
	}
}

func (s *eventServer) resumedFrom() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lastIDs...)
}

// sends answers as an event stream holding text, then ends the connection.
func sends(text string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		_, _ = io.WriteString(w, text)
	}
}

func event(seq int, kind string) string {
	return fmt.Sprintf("id: %d\nevent: %s\ndata: {\"seq\":%d,\"type\":%q,\"at\":\"2026-12-01T12:00:00+00:00\",\"data\":{}}\n\n", seq, kind, seq, kind)
}

func collect(t *testing.T, c *Client, lastEventID string) ([]Event, error) {
	t.Helper()
	var events []Event
	for event, err := range c.Events(context.Background(), "r1", lastEventID) {
		if err != nil {
			return events, err
		}
		events = append(events, event)
	}
	return events, nil
}

func seqs(events []Event) []int64 {
	out := make([]int64, len(events))
	for i, event := range events {
		out[i] = event.Seq
	}
	return out
}

func TestAStreamThatEndsEarlyIsResumedFromTheLastEventID(t *testing.T) {
	server := &eventServer{connections: []func(http.ResponseWriter, *http.Request){
		sends(event(1, "run.created") + event(2, "task.queued")),
		sends(event(3, "task.succeeded") + "data: {\"seq\":4,\"type\":\"run.succ"), // broken mid-event
		sends(event(4, "run.succeeded") + event(5, "never.read")),
	}}
	srv := httptest.NewServer(server)
	defer srv.Close()
	c, slept := testClient(t, srv)

	events, err := collect(t, c, "")
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(seqs(events)); got != "[1 2 3 4]" || events[3].ID != "4" || !events[3].Final() {
		t.Fatalf("events %s (%+v), want 1 to 4 ending with the final one", got, events)
	}
	if got := fmt.Sprint(server.resumedFrom()); got != "[ 2 3]" {
		t.Fatalf("Last-Event-ID per connection %s, want none, then 2, then 3", got)
	}
	if len(slept.recorded()) != 0 {
		t.Fatalf("waited %v before resuming streams that had brought events", slept.recorded())
	}
}

func TestAStreamIsFollowedFromTheIDItIsGiven(t *testing.T) {
	server := &eventServer{connections: []func(http.ResponseWriter, *http.Request){
		sends(event(8, "run.failed")),
	}}
	srv := httptest.NewServer(server)
	defer srv.Close()
	c, _ := testClient(t, srv)

	events, err := collect(t, c, "7")
	if err != nil || len(events) != 1 || server.resumedFrom()[0] != "7" {
		t.Fatalf("events %+v (%v) after sending %v, want event 8 after Last-Event-ID 7", events, err, server.resumedFrom())
	}
}

func TestAFinishedRunAnswering204EndsTheStreamAfterItsKeepAlives(t *testing.T) {
	server := &eventServer{connections: []func(http.ResponseWriter, *http.Request){
		sends(": keep-alive\nid: 7\n\n" + event(8, "task.succeeded") + ": keep-alive\nid: 8\n\n"),
		func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) },
	}}
	srv := httptest.NewServer(server)
	defer srv.Close()
	c, _ := testClient(t, srv)

	events, err := collect(t, c, "7")
	if err != nil || fmt.Sprint(seqs(events)) != "[8]" {
		t.Fatalf("events %+v (%v), want event 8 alone and no error", events, err)
	}
	if got := fmt.Sprint(server.resumedFrom()); got != "[7 8]" {
		t.Fatalf("Last-Event-ID per connection %s, want 7, then 8", got)
	}
}

func TestConnectionsThatBringNothingEndTheStreamWithAStreamErrorAfterTheServersRetry(t *testing.T) {
	server := &eventServer{connections: []func(http.ResponseWriter, *http.Request){
		sends(event(1, "run.created")),
		sends("retry: 1500\n\n"),
	}}
	srv := httptest.NewServer(server)
	defer srv.Close()
	c, slept := testClient(t, srv, WithStreamReconnects(2))

	events, err := collect(t, c, "")
	var broken *StreamError
	if !errors.As(err, &broken) || broken.LastEventID != "1" || len(events) != 1 {
		t.Fatalf("events %+v and err %v, want event 1 then a StreamError", events, err)
	}
	if got := fmt.Sprint(server.resumedFrom()); got != "[ 1 1 1]" {
		t.Fatalf("Last-Event-ID per connection %s, want 3 resumptions from 1 before giving up", got)
	}
	if got := fmt.Sprint(slept.recorded()); got != "[1.5s 1.5s]" {
		t.Fatalf("waits %s, want the stream's retry of 1.5s before each fruitless reconnection", got)
	}
}

func TestAStreamSilentForTheIdleTimeoutIsDroppedAndResumed(t *testing.T) {
	server := &eventServer{connections: []func(http.ResponseWriter, *http.Request){
		func(w http.ResponseWriter, r *http.Request) {
			sends(event(1, "run.created"))(w, r)
			w.(http.Flusher).Flush()
			<-r.Context().Done() // a peer that never writes again
		},
		sends(event(2, "run.cancelled")),
	}}
	srv := httptest.NewServer(server)
	defer srv.Close()
	c, _ := testClient(t, srv, WithStreamIdleTimeout(100*time.Millisecond))

	events, err := collect(t, c, "")
	if err != nil || fmt.Sprint(seqs(events)) != "[1 2]" || fmt.Sprint(server.resumedFrom()) != "[ 1]" {
		t.Fatalf("events %+v (%v) over %v, want 1 then 2 from a resumed stream", events, err, server.resumedFrom())
	}
}

func TestTheConsumerStoppingEndsTheStream(t *testing.T) {
	server := &eventServer{connections: []func(http.ResponseWriter, *http.Request){
		sends(event(1, "run.created") + event(2, "task.queued")),
	}}
	srv := httptest.NewServer(server)
	defer srv.Close()
	c, _ := testClient(t, srv)

	for event, err := range c.Events(context.Background(), "r1", "") {
		if err != nil || event.Seq != 1 {
			t.Fatalf("first pair %+v, %v", event, err)
		}
		break
	}
	if len(server.resumedFrom()) != 1 {
		t.Fatalf("connected %d times for a consumer that stopped at the first event", len(server.resumedFrom()))
	}
}

func TestWaitRunPollsTheRunWhenTheAnswerIsNoEventStream(t *testing.T) {
	server := &eventServer{
		connections: []func(http.ResponseWriter, *http.Request){
			func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "text/html")
				_, _ = io.WriteString(w, "<html>a proxy's page</html>")
			},
		},
		runStates: []string{"running", "running", "succeeded"},
	}
	srv := httptest.NewServer(server)
	defer srv.Close()
	c, slept := testClient(t, srv, WithPollInterval(250*time.Millisecond))

	run, err := c.WaitRun(context.Background(), "r1")
	if err != nil || run.State != RunSucceeded {
		t.Fatalf("run %+v (%v), want it succeeded", run, err)
	}
	if got := fmt.Sprint(slept.recorded()); got != "[250ms 250ms]" || len(server.resumedFrom()) != 1 {
		t.Fatalf("waits %s after %d connections, want two polls apart and one connection", got, len(server.resumedFrom()))
	}
}

func TestWaitRunReadsTheRunOnceItsFinalEventCame(t *testing.T) {
	server := &eventServer{
		connections: []func(http.ResponseWriter, *http.Request){sends(event(1, "run.created") + event(2, "run.succeeded"))},
		runStates:   []string{"succeeded"},
	}
	srv := httptest.NewServer(server)
	defer srv.Close()
	c, slept := testClient(t, srv)

	run, err := c.WaitRun(context.Background(), "r1")
	if err != nil || run.State != RunSucceeded || len(slept.recorded()) != 0 {
		t.Fatalf("run %+v (%v) after waits %v, want it succeeded with no polling", run, err, slept.recorded())
	}
}

func TestWaitRunReturnsTheProblemOfAnUnknownRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"type":"urn:agentflow:problem:not-found","title":"Not found","status":404,"detail":"no run r1","field":"id"}`)
	}))
	defer srv.Close()
	c, slept := testClient(t, srv)

	_, err := c.WaitRun(context.Background(), "r1")
	if !errors.Is(err, ErrNotFound) || len(slept.recorded()) != 0 {
		t.Fatalf("err %v after waits %v, want the not-found problem at once", err, slept.recorded())
	}
}

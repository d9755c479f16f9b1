package agentflow

// Following a run: its events over Server-Sent Events, resumed from the last event id whenever a
// connection ends before the run's final event, and the wait for its end, which polls the run when the
// stream cannot be kept up.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"mime"
	"net/http"
	"sync/atomic"
	"time"
)

// Event is one of a run's state changes: run.created, task.queued, task.started, task.succeeded,
// signal.waiting, run.succeeded and so on.
type Event struct {
	// Seq numbers the run's events from 1.
	Seq int64 `json:"seq"`
	// Type is what happened.
	Type string `json:"type"`
	// At is when it was recorded.
	At time.Time `json:"at"`
	// Data is the event's own document (a task's id and step, a run's output or error...).
	Data json.RawMessage `json:"data"`
	// ID is the event's id in the stream: pass it to [Client.Events] to resume after this event.
	ID string `json:"-"`
}

// Final reports whether the event ends its run (run.succeeded, run.failed, run.cancelled).
func (e Event) Final() bool {
	switch e.Type {
	case "run.succeeded", "run.failed", "run.cancelled":
		return true
	}
	return false
}

// Events iterates over the run's events after lastEventID ("" for all of them), live, and ends after the
// run's final event. A connection that ends or breaks early is resumed with Last-Event-ID, so no event
// is lost or repeated; after [WithStreamReconnects] connections in a row that fail or bring nothing, the
// iteration ends with a [*StreamError]. An error ends the iteration, as its last pair.
func (c *Client) Events(ctx context.Context, runID, lastEventID string) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		f := &feed{c: c, runID: runID, lastID: lastEventID}
		if err := f.follow(ctx, yield); err != nil {
			yield(Event{}, err)
		}
	}
}

// WaitRun waits until the run has finished and returns it with its tasks. It follows the run's events,
// and polls the run every [WithPollInterval] when the stream cannot be kept up. Bound the wait with ctx.
func (c *Client) WaitRun(ctx context.Context, runID string) (*Run, error) {
	for _, err := range c.Events(ctx, runID, "") {
		var broken *StreamError
		if errors.As(err, &broken) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	return c.pollRun(ctx, runID)
}

// pollRun reads the run until it has finished, bearing a few connection failures in a row (a control
// plane restarting).
func (c *Client) pollRun(ctx context.Context, runID string) (*Run, error) {
	failures := 0
	for {
		run, err := c.GetRun(ctx, runID)
		var transport *TransportError
		switch {
		case err == nil && run.State.Final():
			return run, nil
		case err == nil:
			failures = 0
		case errors.As(err, &transport) && failures < c.maxReconnects:
			failures++
		default:
			return nil, err
		}
		if err := c.sleep(ctx, c.pollInterval); err != nil {
			return nil, err
		}
	}
}

// errDone ends a feed: the run's final event came, or the consumer stopped.
var errDone = errors.New("agentflow: the event stream is done")

// errIdle ends a connection that sent nothing for the idle timeout.
var errIdle = errors.New("agentflow: the event stream sent nothing for too long")

// feed is where a client is in a run's event stream, across connections.
type feed struct {
	c      *Client
	runID  string
	lastID string
	// reconnect is the wait the stream asked for before reconnecting (its "retry" field), 0 until it does.
	reconnect time.Duration
}

// follow yields the run's events over as many connections as it takes; it returns the error that ends
// the iteration (nil once done).
func (f *feed) follow(ctx context.Context, yield func(Event, error) bool) error {
	fruitless := 0
	for {
		events, err := f.connection(ctx, yield)
		var problem *Problem
		var broken *StreamError
		switch {
		case errors.Is(err, errDone):
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &problem), errors.As(err, &broken):
			return err
		case events > 0 || errors.Is(err, errIdle):
			fruitless = 0
			continue
		}
		fruitless++
		if fruitless > f.c.maxReconnects {
			if err == nil {
				err = errors.New("the stream ended before the run's final event")
			}
			return &StreamError{RunID: f.runID, LastEventID: f.lastID, Err: err}
		}
		wait := f.reconnect
		if wait == 0 {
			wait = f.c.retry.backoff(fruitless)
		}
		if err := f.c.sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// connection follows one connection, resumed after f.lastID, and yields its events. It returns how many
// came and how the connection ended: errDone, nil (the server closed it), errIdle, or the failure.
func (f *feed) connection(ctx context.Context, yield func(Event, error) bool) (int, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &request{
		method: http.MethodGet,
		path:   "/v1/runs/" + segment(f.runID) + "/events",
		header: http.Header{"Accept": {"text/event-stream"}},
		stream: true,
	}
	if f.lastID != "" {
		r.header.Set("Last-Event-ID", f.lastID)
	}
	resp, done, err := f.c.do(ctx, r)
	if err != nil {
		return 0, err
	}
	defer done()
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		body, _ := io.ReadAll(resp.Body)
		return 0, problemOf(resp.StatusCode, resp.Header, body)
	}
	if resp.StatusCode == http.StatusNoContent {
		// The run has finished and nothing is left after f.lastID.
		return 0, errDone
	}
	if media, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); media != "text/event-stream" {
		err := fmt.Errorf("GET %s answered %q, not an event stream", r.path, media)
		return 0, &StreamError{RunID: f.runID, LastEventID: f.lastID, Err: err}
	}
	body := newIdleReader(resp.Body, f.c.idleTimeout, cancel)
	defer body.stop()
	stream := newSSEReader(body, f.lastID)
	stream.retry = f.reconnect
	for events := 0; ; events++ {
		message, err := stream.next()
		f.reconnect = stream.retry
		if err != nil {
			if body.idled.Load() {
				return events, errIdle
			}
			if errors.Is(err, io.EOF) {
				return events, nil
			}
			return events, &TransportError{URL: f.c.baseURL, Err: err}
		}
		event := Event{}
		if err := json.Unmarshal([]byte(message.data), &event); err != nil {
			err = fmt.Errorf("an event is not a JSON object: %w", err)
			return events, &StreamError{RunID: f.runID, LastEventID: f.lastID, Err: err}
		}
		event.ID, f.lastID = message.id, message.id
		if !yield(event, nil) || event.Final() {
			return events + 1, errDone
		}
	}
}

// idleReader cancels its connection when nothing has come for `after`: the API sends no keep-alives, and
// a peer that vanished without closing would otherwise hold the stream open for ever.
type idleReader struct {
	body  io.Reader
	after time.Duration
	timer *time.Timer
	idled atomic.Bool
}

func newIdleReader(body io.Reader, after time.Duration, cancel context.CancelFunc) *idleReader {
	r := &idleReader{body: body, after: after}
	if after > 0 {
		r.timer = time.AfterFunc(after, func() {
			r.idled.Store(true)
			cancel()
		})
	}
	return r
}

// Read reads the body and restarts the idle timer when something came.
func (r *idleReader) Read(p []byte) (int, error) {
	n, err := r.body.Read(p)
	if n > 0 && r.timer != nil {
		r.timer.Reset(r.after)
	}
	return n, err
}

func (r *idleReader) stop() {
	if r.timer != nil {
		r.timer.Stop()
	}
}

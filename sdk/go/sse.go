package agentflow

// A reader of text/event-stream as the HTML Living Standard parses it (§9.2.6): lines end in CRLF, LF or
// CR; a blank line dispatches the event gathered so far; "id" sets the last event id, which carries over
// to the events after it; "retry" sets the reconnection time; an event unfinished at the end of the
// stream is dropped. Nothing here touches the network.

import (
	"bufio"
	"bytes"
	"io"
	"strconv"
	"strings"
	"time"
)

// maxEventLine bounds one line of the stream (a run's output travels in an event's data).
const maxEventLine = 64 << 20

// sseMessage is one dispatched event.
type sseMessage struct {
	event string
	data  string
	// id is the last event id when the event was dispatched (its own "id" or an earlier event's).
	id string
}

// sseReader reads events from one connection's body.
type sseReader struct {
	lines       *bufio.Scanner
	lastEventID string
	retry       time.Duration
	started     bool
}

func newSSEReader(body io.Reader, lastEventID string) *sseReader {
	lines := bufio.NewScanner(body)
	lines.Buffer(make([]byte, 0, 64<<10), maxEventLine)
	lines.Split(scanStreamLines)
	return &sseReader{lines: lines, lastEventID: lastEventID}
}

// next is the next dispatched event; io.EOF when the stream ended, or the read's error.
func (r *sseReader) next() (sseMessage, error) {
	var data strings.Builder
	event, hasData := "", false
	for r.lines.Scan() {
		line := r.lines.Text()
		if !r.started {
			line, r.started = strings.TrimPrefix(line, "\uFEFF"), true
		}
		if line == "" {
			if !hasData {
				event = ""
				continue
			}
			return sseMessage{event: event, data: strings.TrimSuffix(data.String(), "\n"), id: r.lastEventID}, nil
		}
		if strings.HasPrefix(line, ":") {
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch name {
		case "event":
			event = value
		case "data":
			data.WriteString(value)
			data.WriteByte('\n')
			hasData = true
		case "id":
			if !strings.ContainsRune(value, 0) {
				r.lastEventID = value
			}
		case "retry":
			if ms, err := strconv.ParseUint(value, 10, 31); err == nil {
				r.retry = time.Duration(ms) * time.Millisecond
			}
		}
	}
	if err := r.lines.Err(); err != nil {
		return sseMessage{}, err
	}
	return sseMessage{}, io.EOF
}

// scanStreamLines splits at CRLF, LF or a lone CR; a CR at the end of what has been read waits for the
// next byte, which may be its LF.
func scanStreamLines(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		switch {
		case data[i] == '\n':
			return i + 1, data[:i], nil
		case i+1 < len(data) && data[i+1] == '\n':
			return i + 2, data[:i], nil
		case i+1 < len(data) || atEOF:
			return i + 1, data[:i], nil
		}
		return 0, nil, nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

package agentflow

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func readAll(t *testing.T, stream io.Reader) ([]sseMessage, *sseReader) {
	t.Helper()
	reader := newSSEReader(stream, "")
	var messages []sseMessage
	for {
		message, err := reader.next()
		if errors.Is(err, io.EOF) {
			return messages, reader
		}
		if err != nil {
			t.Fatal(err)
		}
		messages = append(messages, message)
	}
}

func TestTheEventStreamIsParsedAsTheStandardSays(t *testing.T) {
	stream := "\uFEFF: a comment\n" +
		"id: 1\nevent: run.created\ndata: {\"seq\":1}\n\n" +
		"data:first\r\ndata: second\r\n\r\n" + // no id: the last one carries over; no space after the colon
		"retry: 2500\rid: 3\rdata\r\r" + // lone CRs; "data" without a colon is an empty value
		"id: 4\n\n" + // an id without data dispatches nothing, but moves the last event id
		"id: bad\x00id\ndata: x\n\n" + // an id holding NUL is ignored
		"data: unfinished" // dropped: the stream ended before its blank line
	messages, reader := readAll(t, iotest.OneByteReader(strings.NewReader(stream)))

	want := []sseMessage{
		{event: "run.created", data: `{"seq":1}`, id: "1"},
		{data: "first\nsecond", id: "1"},
		{data: "", id: "3"},
		{data: "x", id: "4"},
	}
	if len(messages) != len(want) {
		t.Fatalf("messages %+v, want %+v", messages, want)
	}
	for i := range want {
		if messages[i] != want[i] {
			t.Errorf("message %d is %+v, want %+v", i, messages[i], want[i])
		}
	}
	if reader.retry != 2500*time.Millisecond {
		t.Errorf("retry %v, want 2.5s", reader.retry)
	}
}

func TestALineLongerThanTheBufferIsAnError(t *testing.T) {
	reader := newSSEReader(strings.NewReader("data: "+strings.Repeat("x", maxEventLine)+"\n\n"), "")
	if _, err := reader.next(); err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("err %v, want the scanner's error", err)
	}
}

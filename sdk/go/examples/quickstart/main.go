// Quickstart registers a small tool, runs it once (safely repeatable: the run has an idempotency key),
// prints its events as they come and then its output.
//
// Against the embedded stack (af up), with its admin key:
//
//	export AF_API_URL=http://127.0.0.1:8080 AF_TOKEN=$(cat "$AF_HOME/admin.key")
//	go run ./examples/quickstart "AgentFlow runs tools in sandboxes."
package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	agentflow "github.com/agentflow/agentflow/sdk/go"
)

// wordCount is a tool document: a program reading one JSON document on stdin and writing one on stdout.
var wordCount = map[string]any{
	"name":        "go-quickstart-words",
	"version":     "1.0.0",
	"description": "Counts the words of a text.",
	"runtime": map[string]any{
		"command": []string{"python3", "main.py"},
		"files": map[string]string{
			"main.py": "import json, sys\ntext = json.load(sys.stdin)['text']\njson.dump({'words': len(text.split())}, sys.stdout)\n",
		},
	},
	"input_schema": map[string]any{
		"type": "object", "required": []string{"text"},
		"properties": map[string]any{"text": map[string]string{"type": "string"}},
	},
	"limits": map[string]int{"wall_seconds": 10, "memory_mb": 128},
}

func main() {
	text := strings.Join(os.Args[1:], " ")
	if text == "" {
		text = "Hello from the Go SDK."
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	af, err := agentflow.New() // AF_API_URL and AF_TOKEN
	if err != nil {
		log.Fatal(err)
	}
	tool, err := af.RegisterTool(ctx, wordCount)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("tool %s@%s (new: %t)\n", tool.Name, tool.Version, tool.Created)

	run, err := af.StartRun(ctx, agentflow.RunRequest{
		Tool:           "go-quickstart-words@1.0.0",
		Input:          map[string]string{"text": text},
		IdempotencyKey: fmt.Sprintf("quickstart-%x", sha256.Sum256([]byte(text))), // the same text, the same run
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("run %s (new: %t)\n", run.ID, run.Created)

	for event, err := range af.Events(ctx, run.ID, "") {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("  %3d %s\n", event.Seq, event.Type)
	}
	done, err := af.WaitRun(ctx, run.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %s\n", done.State, done.Output)
}

package agentflow

// Tools, workflows and agents: versioned JSON documents, immutable once stored.

import (
	"context"
	"encoding/json"
	"net/http"
	"time"
)

// Entry is one stored version of a tool, a workflow or an agent.
type Entry struct {
	// Tenant owns the entry.
	Tenant string `json:"tenant"`
	// Name is the tool's, workflow's or agent's name.
	Name string `json:"name"`
	// Version is the entry's version, e.g. 1.0.0.
	Version string `json:"version"`
	// Kind is a workflow's planner: fsm, bt or dag ("" for a tool).
	Kind string `json:"kind,omitempty"`
	// Spec is the stored document (a workflow's or an agent's with its tools pinned to versions).
	Spec json.RawMessage `json:"spec"`
	// Digest identifies the content: the same document again has the same digest.
	Digest string `json:"digest"`
	// CreatedAt is when the version was first stored.
	CreatedAt time.Time `json:"created_at"`
	// Created is true when this call stored the version (HTTP 201), false when the same version with the
	// same content was already there (HTTP 200). Only [Client.RegisterTool], [Client.ApplyWorkflow] and
	// [Client.ApplyAgent] set it.
	Created bool `json:"-"`
}

// itemsOf is the shape of the API's plain lists.
type itemsOf[T any] struct {
	Items []T `json:"items"`
}

// RegisterTool stores a tool version. document is anything that encodes to the tool's JSON document
// (a map, a struct, or a json.RawMessage), its runtime.files holding the files' contents. Another
// content under a stored version is refused with a [*Problem] of kind [ErrConflict].
func (c *Client) RegisterTool(ctx context.Context, document any) (*Entry, error) {
	return c.store(ctx, "/v1/tools", document)
}

// GetTool reads one version of a tool; version "" or "latest" is its newest.
func (c *Client) GetTool(ctx context.Context, name, version string) (*Entry, error) {
	return c.entry(ctx, "/v1/tools/", name, version)
}

// ListTools lists the newest version of each of the tenant's tools.
func (c *Client) ListTools(ctx context.Context) ([]Entry, error) {
	return c.entries(ctx, "/v1/tools")
}

// ApplyWorkflow validates and stores a workflow version (fsm, bt or dag), its tools pinned to versions.
// document is anything that encodes to the workflow's JSON document. The API reports every problem of an
// invalid document at once, in [Problem.Problems].
func (c *Client) ApplyWorkflow(ctx context.Context, document any) (*Entry, error) {
	return c.store(ctx, "/v1/workflows", document)
}

// GetWorkflow reads one version of a workflow; version "" or "latest" is its newest.
func (c *Client) GetWorkflow(ctx context.Context, name, version string) (*Entry, error) {
	return c.entry(ctx, "/v1/workflows/", name, version)
}

// ListWorkflows lists the newest version of each of the tenant's workflows.
func (c *Client) ListWorkflows(ctx context.Context) ([]Entry, error) {
	return c.entries(ctx, "/v1/workflows")
}

// ApplyAgent validates and stores an agent version: a model (a tier or a deployment's name), instructions
// and the tools it may call, pinned to versions. The API reports every problem of an invalid document at
// once, in [Problem.Problems]. Run it with [RunRequest.Agent].
func (c *Client) ApplyAgent(ctx context.Context, document any) (*Entry, error) {
	return c.store(ctx, "/v1/agents", document)
}

// GetAgent reads one version of an agent; version "" or "latest" is its newest.
func (c *Client) GetAgent(ctx context.Context, name, version string) (*Entry, error) {
	return c.entry(ctx, "/v1/agents/", name, version)
}

// ListAgents lists the newest version of each of the tenant's agents.
func (c *Client) ListAgents(ctx context.Context) ([]Entry, error) {
	return c.entries(ctx, "/v1/agents")
}

func (c *Client) store(ctx context.Context, path string, document any) (*Entry, error) {
	r, err := jsonRequest(http.MethodPost, path, document)
	if err != nil {
		return nil, err
	}
	entry := &Entry{}
	status, err := c.call(ctx, r, entry)
	if err != nil {
		return nil, err
	}
	entry.Created = status == http.StatusCreated
	return entry, nil
}

func (c *Client) entry(ctx context.Context, collection, name, version string) (*Entry, error) {
	if version == "" {
		version = "latest"
	}
	entry := &Entry{}
	path := collection + segment(name) + "/versions/" + segment(version)
	if _, err := c.call(ctx, &request{method: http.MethodGet, path: path}, entry); err != nil {
		return nil, err
	}
	return entry, nil
}

func (c *Client) entries(ctx context.Context, path string) ([]Entry, error) {
	var answer itemsOf[Entry]
	if _, err := c.call(ctx, &request{method: http.MethodGet, path: path}, &answer); err != nil {
		return nil, err
	}
	return answer.Items, nil
}

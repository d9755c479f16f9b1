package agentflow

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// tokenServer issues token pairs as the API does: a refresh token is good for one use, and using one a
// second time is refused (401). Its one resource answers 401 unless sent the newest access token.
type tokenServer struct {
	mu          sync.Mutex
	key         string
	issued      int
	exchanges   int
	refreshes   int
	access      string
	refresh     map[string]bool // unused refresh tokens
	refuseFresh bool            // answer every refresh 401, as after a revoked login
	expiresIn   int
	bearers     []string
}

func newTokenServer(key string) *tokenServer {
	return &tokenServer{key: key, refresh: map[string]bool{}, expiresIn: 900}
}

func (s *tokenServer) pair(w http.ResponseWriter) {
	s.issued++
	s.access = fmt.Sprintf("access-%d", s.issued)
	refresh := fmt.Sprintf("afr_%d", s.issued)
	s.refresh[refresh] = true
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": s.access, "token_type": "Bearer", "expires_in": s.expiresIn, "refresh_token": refresh,
	})
}

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = io.WriteString(w, `{"type":"urn:agentflow:problem:unauthorized","title":"Unauthorized","status":401,"detail":"no","field":"Authorization"}`)
}

func (s *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body map[string]string
	_ = json.NewDecoder(r.Body).Decode(&body)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.URL.Path {
	case "/v1/auth/token":
		s.exchanges++
		if body["api_key"] != s.key {
			unauthorized(w)
			return
		}
		s.pair(w)
	case "/v1/auth/refresh":
		s.refreshes++
		if s.refuseFresh || !s.refresh[body["refresh_token"]] {
			unauthorized(w)
			return
		}
		delete(s.refresh, body["refresh_token"])
		s.pair(w)
	default:
		s.bearers = append(s.bearers, r.Header.Get("Authorization"))
		if r.Header.Get("Authorization") != "Bearer "+s.access {
			unauthorized(w)
			return
		}
		_, _ = io.WriteString(w, `{"items":[]}`)
	}
}

// revoke makes the current access token refused, as an expired or revoked one is.
func (s *tokenServer) revoke() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.access = "revoked"
}

// refuseRefreshes makes every refresh answer 401, as after a revoked login.
func (s *tokenServer) refuseRefreshes() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuseFresh = true
}

func (s *tokenServer) sent() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.bearers...)
}

func (s *tokenServer) counts() (exchanges, refreshes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.exchanges, s.refreshes
}

func keyClient(t *testing.T, srv *httptest.Server, key string, now *time.Time) *Client {
	t.Helper()
	c, err := New(WithBaseURL(srv.URL), WithAPIKey(key))
	if err != nil {
		t.Fatal(err)
	}
	c.now = func() time.Time { return *now }
	return c
}

// signedIn is a client of a new token server after its first request, which exchanged the key; its
// clock is the test's to move.
func signedIn(t *testing.T) (*tokenServer, *Client, *time.Time) {
	t.Helper()
	tokens := newTokenServer("af_k_secret")
	srv := httptest.NewServer(tokens)
	t.Cleanup(srv.Close)
	now := time.Now()
	c := keyClient(t, srv, "af_k_secret", &now)
	if _, err := c.ListTools(context.Background()); err != nil {
		t.Fatal(err)
	}
	return tokens, c, &now
}

func TestAnAPIKeyIsExchangedOnceAndItsAccessTokenSent(t *testing.T) {
	tokens, c, _ := signedIn(t)

	for range 2 {
		if _, err := c.ListTools(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if exchanges, refreshes := tokens.counts(); exchanges != 1 || refreshes != 0 {
		t.Fatalf("%d exchanges and %d refreshes, want 1 and 0", exchanges, refreshes)
	}
	for _, bearer := range tokens.sent() {
		if bearer != "Bearer access-1" {
			t.Fatalf("sent %q, want the access token, never the key", bearer)
		}
	}
}

func TestTheAccessTokenIsRefreshedThirtySecondsBeforeItExpires(t *testing.T) {
	tokens, c, now := signedIn(t)
	ctx := context.Background()

	*now = now.Add(869 * time.Second)
	if _, err := c.ListTools(ctx); err != nil {
		t.Fatal(err)
	}
	if _, refreshes := tokens.counts(); refreshes != 0 {
		t.Fatalf("refreshed %d times 31 s before the expiry, want 0", refreshes)
	}
	*now = now.Add(2 * time.Second)
	if _, err := c.ListTools(ctx); err != nil {
		t.Fatal(err)
	}
	if exchanges, refreshes := tokens.counts(); exchanges != 1 || refreshes != 1 {
		t.Fatalf("%d exchanges and %d refreshes 29 s before the expiry, want 1 and 1", exchanges, refreshes)
	}
	if sent := tokens.sent(); sent[len(sent)-1] != "Bearer access-2" {
		t.Fatalf("sent %q after the refresh, want the new access token", sent)
	}
}

func TestRequestsRefusedTogetherWith401RefreshOnceAndAreSentAgain(t *testing.T) {
	tokens, c, _ := signedIn(t)

	tokens.revoke()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.ListTools(context.Background())
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a request refused with 401 failed after the refresh: %v", err)
		}
	}
	// One refresh: a second use of the refresh token would have been refused and forced a new exchange.
	if exchanges, refreshes := tokens.counts(); exchanges != 1 || refreshes != 1 {
		t.Fatalf("%d exchanges and %d refreshes, want 1 and 1", exchanges, refreshes)
	}
}

func TestARefusedRefreshTokenIsReplacedByExchangingTheKeyAgain(t *testing.T) {
	tokens, c, _ := signedIn(t)

	tokens.revoke()
	tokens.refuseRefreshes()
	if _, err := c.ListTools(context.Background()); err != nil {
		t.Fatal(err)
	}
	if exchanges, refreshes := tokens.counts(); exchanges != 2 || refreshes != 1 {
		t.Fatalf("%d exchanges and %d refreshes, want 2 and 1", exchanges, refreshes)
	}
}

func TestAWrongKeyIsAnUnauthorizedProblem(t *testing.T) {
	tokens := newTokenServer("af_k_secret")
	srv := httptest.NewServer(tokens)
	defer srv.Close()
	now := time.Now()
	c := keyClient(t, srv, "af_k_wrong", &now)

	_, err := c.ListTools(context.Background())
	var problem *Problem
	if !errors.As(err, &problem) || !errors.Is(err, ErrUnauthorized) || problem.Field != "Authorization" {
		t.Fatalf("err %v, want the 401 problem of the exchange", err)
	}
}

func TestAStaticTokenIsSentAsItIsAndNeverRenewed(t *testing.T) {
	tokens := newTokenServer("af_k_secret")
	srv := httptest.NewServer(tokens)
	defer srv.Close()
	c, err := New(WithBaseURL(srv.URL), WithToken("eyJ.static"))
	if err != nil {
		t.Fatal(err)
	}

	_, err = c.ListTools(context.Background())
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("err %v, want the 401 problem", err)
	}
	if exchanges, refreshes := tokens.counts(); exchanges != 0 || refreshes != 0 || tokens.sent()[0] != "Bearer eyJ.static" {
		t.Fatalf("sent %v with %d exchanges and %d refreshes, want the token alone", tokens.sent(), exchanges, refreshes)
	}
}

func TestTheEnvironmentConfiguresAClientAndOptionsWin(t *testing.T) {
	t.Setenv("AF_API_URL", "http://127.0.0.1:9/")
	t.Setenv("AF_TOKEN", "af_0123_key")
	c, err := New()
	if err != nil {
		t.Fatal(err)
	}
	if c.BaseURL() != "http://127.0.0.1:9" || c.creds.apiKey != "af_0123_key" || c.creds.static != "" {
		t.Fatalf("url %q and credentials %+v, want AF_API_URL and AF_TOKEN as an API key", c.BaseURL(), c.creds)
	}

	t.Setenv("AF_TOKEN", "eyJ.access")
	if c, err = New(); err != nil || c.creds.static != "eyJ.access" || c.creds.renewable() {
		t.Fatalf("credentials %+v (%v), want AF_TOKEN sent as it is", c.creds, err)
	}

	c, err = New(WithBaseURL("https://api.example.test"), WithToken("tok"))
	if err != nil || c.BaseURL() != "https://api.example.test" || c.creds.static != "tok" {
		t.Fatalf("client %+v (%v), want the options over the environment", c, err)
	}

	if _, err := New(WithBaseURL("127.0.0.1:8080")); err == nil {
		t.Fatal("a URL without a scheme was taken")
	}
}

package agentflow

// Credentials: a bearer sent as it is, or an API key exchanged for an access token and a refresh token.
// A refresh token is good for one use (a second use revokes its whole login), so renewals are made one
// at a time, and a request refused with a token that another request has already replaced just takes
// the new one.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// refreshEarly is how long before its expiry an access token is replaced, so that it does not expire in
// flight; a token that lives shorter than four times this is replaced after three quarters of its life.
const refreshEarly = 30 * time.Second

// credentials are the client's bearer and what renews it. Only the holder of lock reads or changes the
// tokens; lock is a channel so that a request waiting for a renewal still honours its context.
type credentials struct {
	static    string
	apiKey    string
	lock      chan struct{}
	access    string
	refresh   string
	refreshAt time.Time
}

// credentialsFrom reads AF_TOKEN: an API key (af_…) is exchanged for tokens, anything else is a bearer.
func credentialsFrom(token string) *credentials {
	if strings.HasPrefix(token, "af_") {
		return &credentials{apiKey: token}
	}
	return &credentials{static: token}
}

// renewable reports whether a refused bearer can be replaced by another.
func (cr *credentials) renewable() bool { return cr.apiKey != "" }

// tokenPair is the answer of POST /v1/auth/token and POST /v1/auth/refresh.
type tokenPair struct {
	AccessToken  string  `json:"access_token"`
	RefreshToken string  `json:"refresh_token"`
	ExpiresIn    float64 `json:"expires_in"`
}

// acquire takes the credentials' lock unless ctx ends first.
func (c *Client) acquire(ctx context.Context) error {
	select {
	case c.creds.lock <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) release() { <-c.creds.lock }

// bearer is the token to send now: the static one, or an access token got (or renewed) for the key.
func (c *Client) bearer(ctx context.Context) (string, error) {
	cr := c.creds
	if !cr.renewable() {
		return cr.static, nil
	}
	if err := c.acquire(ctx); err != nil {
		return "", err
	}
	defer c.release()
	if cr.access == "" || !c.now().Before(cr.refreshAt) {
		if err := c.renewLocked(ctx); err != nil {
			return "", err
		}
	}
	return cr.access, nil
}

// renew replaces the access token the API refused, unless another request has replaced it already.
func (c *Client) renew(ctx context.Context, refused string) (string, error) {
	if err := c.acquire(ctx); err != nil {
		return "", err
	}
	defer c.release()
	if c.creds.access == refused {
		if err := c.renewLocked(ctx); err != nil {
			return "", err
		}
	}
	return c.creds.access, nil
}

// renewLocked uses the refresh token, and exchanges the API key again when there is none or the API
// refuses it (used, expired, or its login revoked).
func (c *Client) renewLocked(ctx context.Context) error {
	cr := c.creds
	if cr.refresh != "" {
		err := c.obtain(ctx, "/v1/auth/refresh", map[string]string{"refresh_token": cr.refresh})
		if err == nil || !errors.Is(err, ErrUnauthorized) {
			return err
		}
		cr.refresh = ""
	}
	return c.obtain(ctx, "/v1/auth/token", map[string]string{"api_key": cr.apiKey})
}

// obtain asks the API at path for a token pair and keeps it.
func (c *Client) obtain(ctx context.Context, path string, body map[string]string) error {
	r, err := jsonRequest(http.MethodPost, path, body)
	if err != nil {
		return err
	}
	r.anonymous = true
	var pair tokenPair
	if _, err := c.call(ctx, r, &pair); err != nil {
		return err
	}
	if pair.AccessToken == "" || pair.ExpiresIn <= 0 {
		return fmt.Errorf("agentflow: POST %s answered without an access token and its lifetime", path)
	}
	lifetime := time.Duration(pair.ExpiresIn * float64(time.Second))
	cr := c.creds
	cr.access, cr.refresh = pair.AccessToken, pair.RefreshToken
	cr.refreshAt = c.now().Add(lifetime - min(refreshEarly, lifetime/4))
	return nil
}

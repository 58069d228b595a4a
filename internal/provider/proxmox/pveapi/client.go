// Package pveapi is a thin, typed client for the Proxmox VE REST API: token
// authentication, TLS verified against the system roots, a CA file or a
// pinned certificate fingerprint, retries of idempotent calls, task polling
// by UPID, and errors that say what Proxmox refused and why.
//
// It sends exactly the parameters its callers give it, so every request can
// be checked against the official API schema.
package pveapi

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// Client talks to one Proxmox VE API endpoint with an API token.
type Client struct {
	base    *url.URL
	tokenID string
	secret  string
	hc      *http.Client

	// Attempts is how many times an idempotent call (GET, PUT) is tried
	// when it fails with a 5xx, a timeout or a dropped connection
	// (default 3).
	Attempts int
	// Backoff is the first wait between attempts; it doubles (default 250ms).
	Backoff time.Duration
	// Poll is the interval between task status checks (default 500ms).
	Poll time.Duration

	calls atomic.Int64
}

// New returns a client for endpoint (https://host:8006, with or without
// /api2/json). hc carries the TLS configuration; see TLSConfig.
func New(endpoint, tokenID, secret string, hc *http.Client) (*Client, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("proxmox endpoint %q is not an https:// URL", endpoint)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	if !strings.HasSuffix(u.Path, "/api2/json") {
		u.Path += "/api2/json"
	}
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: u, tokenID: tokenID, secret: secret, hc: hc}, nil
}

// Calls is the number of HTTP requests sent so far (retries included).
func (c *Client) Calls() int64 { return c.calls.Load() }

// Host is the endpoint's host name, without port.
func (c *Client) Host() string { return c.base.Hostname() }

// TokenID is the token's id (user@realm!name); it is not secret.
func (c *Client) TokenID() string { return c.tokenID }

// Error is a request Proxmox answered with an error status.
type Error struct {
	Method string
	Path   string
	Status int
	// Message is Proxmox's reason (status line text or body message).
	Message string
	// Params holds per-parameter errors of a 400.
	Params map[string]string
}

func (e *Error) Error() string {
	msg := e.Message
	if len(e.Params) > 0 {
		var ps []string
		for _, k := range slices.Sorted(maps.Keys(e.Params)) {
			ps = append(ps, k+": "+strings.TrimSpace(e.Params[k]))
		}
		msg = strings.TrimSpace(msg + " (" + strings.Join(ps, "; ") + ")")
	}
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Status, msg)
}

// Temporary reports whether retrying may help: a 5xx, except the 500s
// Proxmox answers for a state that retrying will not change (an object
// that does not exist or already exists).
func (e *Error) Temporary() bool {
	if e.Status < 500 {
		return false
	}
	m := strings.ToLower(e.Message)
	for _, permanent := range []string{"does not exist", "already exists", "no such", "not found"} {
		if strings.Contains(m, permanent) {
			return false
		}
	}
	return true
}

// IsExists reports whether err says the object already exists (a create
// that an earlier, interrupted attempt already made).
func IsExists(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Status >= 400 && strings.Contains(strings.ToLower(e.Message+fmt.Sprint(e.Params)), "already exists")
}

// IsNotFound reports whether err says the object does not exist (a 404,
// or the 500 "... does not exist" Proxmox answers for a missing guest).
func IsNotFound(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	m := strings.ToLower(e.Message)
	return e.Status == 404 || e.Status == 500 && (strings.Contains(m, "does not exist") || strings.Contains(m, "no such"))
}

var permRE = regexp.MustCompile(`Permission check failed \(([^,]+), ([^)]+)\)`)

// Permission returns the ACL path and privilege of a 403 "Permission check
// failed (/path, Priv)", if the error is one.
func (e *Error) Permission() (path, priv string, ok bool) {
	if e.Status != http.StatusForbidden {
		return "", "", false
	}
	m := permRE.FindStringSubmatch(e.Message)
	if m == nil {
		return "", "", false
	}
	return strings.TrimSpace(m[1]), strings.TrimSpace(m[2]), true
}

// NetError is a request that got no answer: refused or dropped connection,
// timeout. It is always worth retrying.
type NetError struct {
	Method, Path string
	Err          error
}

func (e *NetError) Error() string {
	return fmt.Sprintf("%s %s: %v", e.Method, e.Path, e.Err)
}
func (e *NetError) Unwrap() error { return e.Err }

// Temporary is always true: the server may answer next time.
func (e *NetError) Temporary() bool { return true }

// IsTemporary reports whether err is worth retrying.
func IsTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// IsStatus reports whether err is an API error with this status.
func IsStatus(err error, status int) bool {
	var e *Error
	return errors.As(err, &e) && e.Status == status
}

// Seg escapes one path segment, keeping the characters a URL path may
// hold as they are (a UPID's ':' and '!', a volume ID's ':'), as the
// Proxmox tools do.
func Seg(s string) string {
	e := url.PathEscape(s)
	return strings.NewReplacer("%21", "!", "%3A", ":", "%40", "@", "%2B", "+", "%3D", "=", "%24", "$", "%26", "&").Replace(e)
}

// Get calls GET path (its segments escaped with Seg) with query parameters and decodes data into out (may be nil).
func (c *Client) Get(ctx context.Context, path string, q url.Values, out any) error {
	return c.do(ctx, http.MethodGet, path, q, out, true)
}

// Put calls PUT path with form parameters. PUT is idempotent in the
// Proxmox API (it sets values), so it is retried.
func (c *Client) Put(ctx context.Context, path string, form url.Values, out any) error {
	return c.do(ctx, http.MethodPut, path, form, out, true)
}

// Post calls POST path with form parameters. It is not retried: a create
// that may have happened must be checked by the caller first.
func (c *Client) Post(ctx context.Context, path string, form url.Values, out any) error {
	return c.do(ctx, http.MethodPost, path, form, out, false)
}

// Delete calls DELETE path with query parameters. Not retried.
func (c *Client) Delete(ctx context.Context, path string, q url.Values, out any) error {
	return c.do(ctx, http.MethodDelete, path, q, out, false)
}

func (c *Client) do(ctx context.Context, method, path string, params url.Values, out any, retry bool) error {
	attempts := c.Attempts
	if attempts <= 0 {
		attempts = 3
	}
	if !retry {
		attempts = 1
	}
	wait := c.Backoff
	if wait <= 0 {
		wait = 250 * time.Millisecond
	}
	var err error
	for i := 1; ; i++ {
		err = c.once(ctx, method, path, params, out)
		if err == nil || !IsTemporary(err) || i >= attempts || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait *= 2
	}
}

func (c *Client) once(ctx context.Context, method, path string, params url.Values, out any) error {
	u := *c.base
	u.RawPath = c.base.EscapedPath() + path
	if p, err := url.PathUnescape(u.RawPath); err == nil {
		u.Path = p
	} else {
		u.Path += path
		u.RawPath = ""
	}
	var body io.Reader
	if method == http.MethodGet || method == http.MethodDelete {
		u.RawQuery = params.Encode()
	} else if len(params) > 0 {
		body = strings.NewReader(params.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "PVEAPIToken="+c.tokenID+"="+c.secret)
	c.calls.Add(1)
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s %s: %w", method, path, ctx.Err())
		}
		var fe *FingerprintError
		var ce *tls.CertificateVerificationError
		if errors.As(err, &fe) || errors.As(err, &ce) {
			// A certificate that fails verification will fail again.
			return fmt.Errorf("%s %s: %w", method, path, scrub(err))
		}
		return &NetError{Method: method, Path: path, Err: scrub(err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return &NetError{Method: method, Path: path, Err: scrub(err)}
	}
	var env struct {
		Data    json.RawMessage   `json:"data"`
		Message string            `json:"message"`
		Errors  map[string]string `json:"errors"`
	}
	_ = json.Unmarshal(raw, &env)
	if resp.StatusCode >= 300 {
		msg := strings.TrimSpace(strings.TrimPrefix(resp.Status, fmt.Sprint(resp.StatusCode)))
		if m := strings.TrimSpace(env.Message); m != "" && !strings.Contains(msg, m) {
			if msg == "" || msg == http.StatusText(resp.StatusCode) {
				msg = m
			} else {
				msg += ": " + m
			}
		}
		return &Error{Method: method, Path: path, Status: resp.StatusCode, Message: msg, Params: env.Errors}
	}
	if out == nil || len(env.Data) == 0 || string(env.Data) == "null" {
		return nil
	}
	if err := json.Unmarshal(env.Data, out); err != nil {
		return fmt.Errorf("%s %s: decoding answer: %w", method, path, err)
	}
	return nil
}

// scrub keeps transport errors readable and free of the URL's query (which
// never holds the token, but may be long).
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("timed out: %w", err)
	}
	return err
}

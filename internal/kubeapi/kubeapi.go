// Package kubeapi is the small Kubernetes API client homelab's flows
// share: one request at a time over an *http.Client that already carries
// the admin's credentials, JSON in and out. It imports only the standard
// library and apimachinery's meta types, so that any package can use it.
package kubeapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MaxBody bounds an answer read from the API (a PodList of a large
// namespace, a discovery document).
const MaxBody = 32 << 20

// Client talks to the Kubernetes API at Server (https://host:port).
type Client struct {
	HTTP   *http.Client
	Server string
}

// Error is a request the API refused or answered with other than 2xx.
// It holds the API's Status message (or the first line of another
// answer), never the request's body: secrets go through the client.
type Error struct {
	Method string
	// Path is the request's path without its query.
	Path    string
	Code    int
	Reason  string
	Message string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s %s: %d", e.Method, e.Path, e.Code)
	if e.Reason != "" {
		s += " " + e.Reason
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Do sends one request with body (nil for none) and, for a 2xx answer,
// decodes it into out when out is not nil. Answers are decoded
// leniently: a newer API server adds fields this build does not know.
// It returns the HTTP status (0 when no answer came); a non-2xx answer is
// an *Error.
func (c *Client) Do(ctx context.Context, method, path, contentType string, body []byte, out any) (int, error) {
	code, data, err := c.send(ctx, method, path, contentType, body, "application/json")
	if err != nil {
		return code, err
	}
	if code/100 != 2 {
		e := &Error{Method: method, Path: trimQuery(path), Code: code, Message: FirstLine(data)}
		var st metav1.Status
		if json.Unmarshal(data, &st) == nil && st.Message != "" {
			e.Message, e.Reason = st.Message, string(st.Reason)
		}
		return code, e
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return code, fmt.Errorf("%s %s: the answer is not the expected object: %s", method, trimQuery(path), FirstLine([]byte(err.Error())))
		}
	}
	return code, nil
}

// Get reads path as is (for /readyz and other text endpoints): the
// status and the answer, whatever the status; the error is only for no
// answer at all.
func (c *Client) Get(ctx context.Context, path string) (int, []byte, error) {
	return c.send(ctx, http.MethodGet, path, "", nil, "")
}

func (c *Client) send(ctx context.Context, method, path, contentType string, body []byte, accept string) (int, []byte, error) {
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.Server, "/")+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody+1))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("%s %s: reading the answer: %w", method, trimQuery(path), err)
	}
	if len(data) > MaxBody {
		return resp.StatusCode, nil, fmt.Errorf("%s %s: the answer is larger than %d MiB", method, trimQuery(path), MaxBody>>20)
	}
	return resp.StatusCode, data, nil
}

func trimQuery(path string) string {
	p, _, _ := strings.Cut(path, "?")
	return p
}

// FirstLine is the first line of b, at most 200 bytes of it.
func FirstLine(b []byte) string {
	s, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

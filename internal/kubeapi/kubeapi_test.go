package kubeapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const secretBody = `{"kind":"Secret","data":{"identity":"c2VjcmV0LWtleS1tYXRlcmlhbA=="}}`

func TestDo(t *testing.T) {
	for _, tc := range []struct {
		name     string
		code     int
		answer   string
		wantCode int
		wantErr  string // substring; "" for success
		wantName string
	}{
		{name: "ok", code: 200, answer: `{"kind":"Status","metadata":{"name":"x"}}`, wantCode: 200, wantName: "x"},
		// a newer API server's fields are ignored
		{name: "unknown fields", code: 200, answer: `{"kind":"Status","metadata":{"name":"x","future":1},"future":{"a":[1]}}`, wantCode: 200, wantName: "x"},
		{name: "status message", code: 404, answer: `{"kind":"Status","status":"Failure","reason":"NotFound","message":"nodes \"lab-worker-9\" not found","code":404}`,
			wantCode: 404, wantErr: `PATCH /api/v1/nodes/lab-worker-9: 404 NotFound: nodes "lab-worker-9" not found`},
		{name: "not a status", code: 502, answer: "bad gateway\nmore", wantCode: 502, wantErr: "PATCH /api/v1/nodes/lab-worker-9: 502: bad gateway"},
		{name: "not json", code: 200, answer: "<html>", wantCode: 200, wantErr: "the answer is not the expected object"},
		{name: "too large", code: 200, answer: strings.Repeat(" ", MaxBody+1), wantCode: 200, wantErr: "larger than 32 MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var gotBody, gotType, gotQuery string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				gotBody, gotType, gotQuery = string(b), r.Header.Get("Content-Type"), r.URL.RawQuery
				w.WriteHeader(tc.code)
				io.WriteString(w, tc.answer)
			}))
			defer srv.Close()
			c := &Client{HTTP: srv.Client(), Server: srv.URL + "/"}
			var out metav1.PartialObjectMetadata
			code, err := c.Do(context.Background(), http.MethodPatch, "/api/v1/nodes/lab-worker-9?fieldManager=homelab", "application/apply-patch+yaml", []byte(secretBody), &out)
			if code != tc.wantCode {
				t.Errorf("code = %d, want %d", code, tc.wantCode)
			}
			if gotBody != secretBody || gotType != "application/apply-patch+yaml" || gotQuery != "fieldManager=homelab" {
				t.Errorf("the server got body of %d bytes, type %q, query %q", len(gotBody), gotType, gotQuery)
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("Do: %v", err)
			case tc.wantErr == "":
				if out.Name != tc.wantName {
					t.Errorf("decoded name %q, want %q", out.Name, tc.wantName)
				}
			case err == nil || !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("error = %v, want %q", err, tc.wantErr)
			}
			if err != nil && (strings.Contains(err.Error(), "c2VjcmV0") || strings.Contains(err.Error(), "fieldManager")) {
				t.Errorf("the error carries the request's body or query (%d bytes)", len(err.Error()))
			}
			var ae *Error
			if tc.code/100 != 2 && (!errors.As(err, &ae) || ae.Code != tc.code) {
				t.Errorf("error %v is not an *Error with code %d", err, tc.code)
			}
		})
	}
}

func TestGetAndNoBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength != 0 || r.Header.Get("Content-Type") != "" {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, "[-]etcd failed\nreadyz check failed")
	}))
	defer srv.Close()
	c := &Client{HTTP: srv.Client(), Server: srv.URL}
	code, body, err := c.Get(context.Background(), "/readyz")
	if err != nil || code != http.StatusServiceUnavailable || FirstLine(body) != "[-]etcd failed" {
		t.Errorf("Get = %d %q %v, want 503 with the answer", code, body, err)
	}
	if _, err := c.Do(context.Background(), http.MethodDelete, "/api/v1/nodes/x", "", nil, nil); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("Do without a body = %v, want the 503 (sent with no body)", err)
	}
	if _, _, err := (&Client{HTTP: srv.Client(), Server: "http://127.0.0.1:1"}).Get(context.Background(), "/readyz"); err == nil {
		t.Error("Get of a closed port succeeded")
	}
}

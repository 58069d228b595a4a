package pvesim

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Token is an API token the simulator accepts.
type Token struct {
	ID     string // USER@REALM!TOKENID
	Secret string
	// Privs maps an ACL path ("/", "/vms/100", "/storage/local") to the
	// privileges granted there and on everything below it. Nil grants all.
	Privs map[string][]string
}

// StorageConfig describes one storage of every node.
type StorageConfig struct {
	ID      string
	Type    string   // "dir", "lvmthin", ...
	Content []string // "iso", "vztmpl", "import", "snippets", "images", "rootdir", ...
	Total   int64    // bytes
}

// Options configure a simulator. The zero value is usable.
type Options struct {
	SchemaPath string          // default: SchemaPath()
	Nodes      []string        // default ["pve"]
	Storages   []StorageConfig // default "local" and "local-lvm"
	Tokens     []Token         // default one all-powerful token (DefaultTokenID)
	// Templates offered by GET /nodes/{node}/aplinfo.
	Templates []string
	// TimeScale multiplies every simulated duration (latencies, task times,
	// boot delay); 0 means 1. Use 0.01 to run realistic timings 100x faster.
	TimeScale float64
	// AgentBootDelay is how long after start the guest agent answers.
	AgentBootDelay time.Duration
	// TaskLatency by task type (qmcreate, vzcreate, download, qmstart, ...).
	TaskLatency map[string]time.Duration
}

// Default credentials when Options.Tokens is empty.
const (
	DefaultTokenID     = "root@pam!pvesim"
	DefaultTokenSecret = "00000000-0000-4000-8000-000000000000"
)

// Call is one request the simulator received.
type Call struct {
	Method   string
	Path     string // below /api2/json
	Template string // schema path template, "" when unknown
	Params   url.Values
	Status   int
}

// Violation is a request the real API would reject as malformed, or one the
// simulator does not model.
type Violation struct {
	Kind    string // "path", "method", "param", "content", "unsimulated"
	Method  string
	Path    string
	Params  map[string]string // parameter -> message, for Kind "param"
	Message string
}

func (v Violation) String() string {
	s := fmt.Sprintf("%s %s: %s", v.Method, v.Path, v.Message)
	keys := make([]string, 0, len(v.Params))
	for k := range v.Params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s += fmt.Sprintf("; %s: %s", k, v.Params[k])
	}
	return s
}

// Sim is the simulator; it is an http.Handler serving /api2/json/.
type Sim struct {
	schema *Schema

	mu         sync.Mutex
	scale      float64
	bootDelay  time.Duration
	taskLat    map[string]time.Duration
	callLat    []latencyRule
	failRules  []*failRule
	taskFails  map[string][]string
	dropRules  []*dropRule
	tokens     map[string]Token
	calls      []Call
	violations []Violation
	st         *state
	timers     []*time.Timer
	pidSeq     int
	now        func() time.Time
}

type latencyRule struct {
	method, pattern string
	d               time.Duration
}

type failRule struct {
	method, pattern string
	n, status       int
	msg             string
}

type dropRule struct {
	method, pattern string
	n               int
}

// New loads the schema and builds a simulator.
func New(opts Options) (*Sim, error) {
	p := opts.SchemaPath
	if p == "" {
		var err error
		if p, err = SchemaPath(); err != nil {
			return nil, err
		}
	}
	schema, err := LoadSchema(p)
	if err != nil {
		return nil, err
	}
	s := &Sim{
		schema:    schema,
		scale:     opts.TimeScale,
		bootDelay: opts.AgentBootDelay,
		taskLat:   map[string]time.Duration{},
		taskFails: map[string][]string{},
		tokens:    map[string]Token{},
		now:       time.Now,
	}
	if s.scale <= 0 {
		s.scale = 1
	}
	for k, v := range opts.TaskLatency {
		s.taskLat[k] = v
	}
	if len(opts.Tokens) == 0 {
		opts.Tokens = []Token{{ID: DefaultTokenID, Secret: DefaultTokenSecret}}
	}
	for _, t := range opts.Tokens {
		s.tokens[t.ID] = t
	}
	s.st = newState(opts)
	return s, nil
}

// Close stops pending task timers.
func (s *Sim) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range s.timers {
		t.Stop()
	}
	s.timers = nil
}

// SetTimeScale changes the factor applied to every simulated duration.
func (s *Sim) SetTimeScale(f float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f <= 0 {
		f = 1
	}
	s.scale = f
}

// SetAgentBootDelay sets how long after start a guest agent answers ping.
func (s *Sim) SetAgentBootDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.bootDelay = d
}

// SetTaskLatency sets how long tasks of a type (qmcreate, download, ...) run.
func (s *Sim) SetTaskLatency(taskType string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.taskLat[taskType] = d
}

// SetCallLatency delays every request matching method ("" or "*" for any)
// and pattern (a schema template such as "/nodes/{node}/qemu", or a glob on
// the request path such as "/nodes/*/qemu/*/config"; "" or "*" for any).
func (s *Sim) SetCallLatency(method, pattern string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.callLat = append(s.callLat, latencyRule{method, pattern, d})
}

// FailNext makes the next n requests matching method and pattern fail with
// the given 5xx status and message (before any state change).
func (s *Sim) FailNext(method, pattern string, n, status int, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failRules = append(s.failRules, &failRule{method, pattern, n, status, msg})
}

// FailNextTask makes the next task of the type end with exitstatus msg.
func (s *Sim) FailNextTask(taskType, msg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.taskFails[taskType] = append(s.taskFails[taskType], msg)
}

// DropNext closes the connection, without an answer, of the next n requests
// matching method and pattern (before any state change).
func (s *Sim) DropNext(method, pattern string, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropRules = append(s.dropRules, &dropRule{method, pattern, n})
}

// Calls returns every request received so far.
func (s *Sim) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// CallCount returns the number of requests received so far.
func (s *Sim) CallCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

// CallCounts returns the number of requests per "METHOD template".
func (s *Sim) CallCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for _, c := range s.calls {
		out[c.Method+" "+c.Template]++
	}
	return out
}

// ResetCalls forgets the recorded calls (not the violations).
func (s *Sim) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = nil
}

// Violations returns every malformed or unsimulated request so far.
func (s *Sim) Violations() []Violation {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Violation(nil), s.violations...)
}

func (s *Sim) scaled(d time.Duration) time.Duration {
	return time.Duration(float64(d) * s.scale)
}

func matches(method, pattern, reqMethod, template, reqPath string) bool {
	if method != "" && method != "*" && !strings.EqualFold(method, reqMethod) {
		return false
	}
	if pattern == "" || pattern == "*" || pattern == template {
		return true
	}
	ok, _ := path.Match(pattern, reqPath)
	return ok
}

// apiError is an answer other than 200.
type apiError struct {
	status int
	msg    string
	errors map[string]string
}

func (e *apiError) Error() string { return e.msg }

func errf(status int, format string, args ...any) *apiError {
	return &apiError{status: status, msg: fmt.Sprintf(format, args...)}
}

func paramErr(errs map[string]string) *apiError {
	return &apiError{status: http.StatusBadRequest, msg: "Parameter verification failed.", errors: errs}
}

// withChanges is a result with PVE's top-level "changes" attribute.
type withChanges struct {
	data    any
	changes string
}

const apiPrefix = "/api2/json"

// ServeHTTP implements http.Handler.
func (s *Sim) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rel, ok := strings.CutPrefix(r.URL.EscapedPath(), apiPrefix)
	if !ok || (rel != "" && rel[0] != '/') {
		s.record(Call{Method: r.Method, Path: r.URL.Path, Status: http.StatusNotImplemented},
			&Violation{Kind: "path", Method: r.Method, Path: r.URL.Path, Message: "no such uri"})
		writeError(w, errf(http.StatusNotImplemented, "no such uri"))
		return
	}
	var segs []string
	for _, seg := range splitPath(rel) {
		u, err := url.PathUnescape(seg)
		if err != nil {
			u = seg
		}
		segs = append(segs, u)
	}
	relPath := "/" + strings.Join(segs, "/")
	call := Call{Method: r.Method, Path: relPath}
	ep, pathParams := s.schema.match(segs)
	if ep != nil {
		call.Template = ep.template
	}

	// Faults that act before anything else.
	if s.takeDrop(r.Method, call.Template, relPath) {
		call.Status = -1
		s.record(call, nil)
		dropConn(w)
		return
	}

	// Authentication comes first, as in pveproxy.
	tok, aerr := s.authenticate(r)
	if aerr != nil {
		call.Status = aerr.status
		s.record(call, nil)
		writeError(w, aerr)
		return
	}

	params, up, perr := readParams(r)
	call.Params = params
	if perr != nil {
		call.Status = perr.status
		s.record(call, &Violation{Kind: "content", Method: r.Method, Path: relPath, Message: perr.msg})
		writeError(w, perr)
		return
	}
	if ep == nil || ep.methods[r.Method] == nil {
		e := errf(http.StatusNotImplemented, "Method '%s %s' not implemented", r.Method, relPath)
		kind := "path"
		if ep != nil {
			kind = "method"
		}
		call.Status = e.status
		s.record(call, &Violation{Kind: kind, Method: r.Method, Path: relPath, Message: e.msg})
		writeError(w, e)
		return
	}
	m := ep.methods[r.Method]
	all := url.Values{}
	for k, v := range params {
		all[k] = v
	}
	for k, v := range pathParams {
		all[k] = []string{v}
	}
	if errs := m.validate(all); len(errs) > 0 {
		e := paramErr(errs)
		call.Status = e.status
		s.record(call, &Violation{Kind: "param", Method: r.Method, Path: relPath, Params: errs, Message: e.msg})
		writeError(w, e)
		return
	}
	if m.AllowToken == 0 {
		e := errf(http.StatusForbidden, "Permission check failed (API tokens are not allowed)")
		call.Status = e.status
		s.record(call, nil)
		writeError(w, e)
		return
	}
	if e := s.checkPerms(tok, m.Permissions, all); e != nil {
		call.Status = e.status
		s.record(call, nil)
		writeError(w, e)
		return
	}

	s.mu.Lock()
	var delay time.Duration
	for _, l := range s.callLat {
		if matches(l.method, l.pattern, r.Method, ep.template, relPath) {
			delay += s.scaled(l.d)
		}
	}
	s.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		}
	}
	if e := s.takeFail(r.Method, ep.template, relPath); e != nil {
		call.Status = e.status
		s.record(call, nil)
		writeError(w, e)
		return
	}

	h := handlers[r.Method+" "+ep.template]
	if h == nil {
		e := errf(http.StatusNotImplemented, "Method '%s %s' not implemented", r.Method, relPath)
		call.Status = e.status
		s.record(call, &Violation{Kind: "unsimulated", Method: r.Method, Path: relPath, Message: "pvesim does not simulate " + r.Method + " " + ep.template})
		writeError(w, e)
		return
	}
	s.mu.Lock()
	data, err := h(s, &req{sim: s, params: all, tok: tok, user: tok.ID, upload: up})
	s.mu.Unlock()
	if err != nil {
		e, ok := err.(*apiError)
		if !ok {
			e = errf(http.StatusInternalServerError, "%s", err.Error())
		}
		call.Status = e.status
		s.record(call, nil)
		writeError(w, e)
		return
	}
	call.Status = http.StatusOK
	s.record(call, nil)
	body := map[string]any{"data": data}
	if wc, ok := data.(withChanges); ok {
		body["data"] = wc.data
		if wc.changes != "" {
			body["changes"] = wc.changes
		}
	}
	b, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.Write(b)
}

func (s *Sim) record(c Call, v *Violation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, c)
	if v != nil {
		s.violations = append(s.violations, *v)
	}
}

func (s *Sim) takeDrop(method, template, p string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.dropRules {
		if d.n > 0 && matches(d.method, d.pattern, method, template, p) {
			d.n--
			return true
		}
	}
	return false
}

func (s *Sim) takeFail(method, template, p string) *apiError {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.failRules {
		if f.n > 0 && matches(f.method, f.pattern, method, template, p) {
			f.n--
			return errf(f.status, "%s", f.msg)
		}
	}
	return nil
}

func (s *Sim) authenticate(r *http.Request) (Token, *apiError) {
	h := r.Header.Get("Authorization")
	v, ok := strings.CutPrefix(h, "PVEAPIToken=")
	if !ok {
		return Token{}, errf(http.StatusUnauthorized, "No ticket")
	}
	id, secret, ok := strings.Cut(v, "=")
	user, tokName, ok2 := strings.Cut(id, "!")
	if !ok || !ok2 || user == "" || tokName == "" {
		return Token{}, errf(http.StatusUnauthorized, "authentication failure")
	}
	s.mu.Lock()
	tok, known := s.tokens[id]
	s.mu.Unlock()
	if !known {
		return Token{}, errf(http.StatusUnauthorized, "no such token '%s' for user '%s'", tokName, user)
	}
	if tok.Secret != secret {
		return Token{}, errf(http.StatusUnauthorized, "invalid token value!")
	}
	return tok, nil
}

// readParams merges the query string and the body (form or JSON).
func readParams(r *http.Request) (url.Values, *upload, *apiError) {
	params := r.URL.Query()
	ct, ctParams, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct == "multipart/form-data" {
		if r.Method != http.MethodPost {
			return params, nil, errf(http.StatusNotImplemented, "Unexpected content for method '%s'", r.Method)
		}
		up, err := readMultipart(r.Body, ctParams["boundary"], params)
		if err != nil {
			return params, nil, errf(http.StatusNotImplemented, "upload failed: %v", err)
		}
		return params, up, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return nil, nil, errf(http.StatusBadRequest, "reading the request body: %v", err)
	}
	if len(body) == 0 {
		return params, nil, nil
	}
	if r.Method != http.MethodPost && r.Method != http.MethodPut {
		return params, nil, errf(http.StatusNotImplemented, "Unexpected content for method '%s'", r.Method)
	}
	switch ct {
	case "application/x-www-form-urlencoded", "":
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return params, nil, errf(http.StatusBadRequest, "invalid form body: %v", err)
		}
		for k, v := range form {
			params[k] = append(params[k], v...)
		}
	case "application/json":
		var obj map[string]any
		if err := json.Unmarshal(body, &obj); err != nil {
			return params, nil, errf(http.StatusBadRequest, "invalid JSON body: %v", err)
		}
		for k, v := range obj {
			switch v := v.(type) {
			case []any:
				for _, x := range v {
					params.Add(k, jsonScalar(x))
				}
			default:
				params.Add(k, jsonScalar(v))
			}
		}
	default:
		return params, nil, errf(http.StatusNotImplemented, "unsupported content type '%s'", ct)
	}
	return params, nil, nil
}

// upload is the file part of a multipart request (field "filename").
type upload struct {
	name string
	data []byte
}

// MaxUpload bounds the bytes kept from one upload.
const MaxUpload = 256 << 20

func readMultipart(body io.Reader, boundary string, params url.Values) (*upload, error) {
	if boundary == "" {
		return nil, fmt.Errorf("no multipart boundary")
	}
	mr := multipart.NewReader(body, boundary)
	var up *upload
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			return up, nil
		}
		if err != nil {
			return nil, err
		}
		data, err := io.ReadAll(io.LimitReader(part, MaxUpload+1))
		if err != nil {
			return nil, err
		}
		if len(data) > MaxUpload {
			return nil, fmt.Errorf("file larger than %d bytes", MaxUpload)
		}
		if fn := part.FileName(); fn != "" {
			up = &upload{name: fn, data: data}
			params.Set(part.FormName(), fn)
			continue
		}
		params.Add(part.FormName(), string(data))
	}
}

func jsonScalar(v any) string {
	switch v := v.(type) {
	case bool:
		if v {
			return "1"
		}
		return "0"
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case string:
		return v
	case nil:
		return ""
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

// writeError answers like pveproxy: the message is the HTTP reason phrase
// and, for JSON, also the body's "message" (with PVE's trailing newline).
func writeError(w http.ResponseWriter, e *apiError) {
	body := map[string]any{"data": nil}
	if len(e.errors) > 0 {
		body["errors"] = e.errors
	}
	if e.status != http.StatusUnauthorized {
		body["message"] = e.msg + "\n"
	}
	b, _ := json.Marshal(body)
	if e.status == http.StatusUnauthorized {
		b = nil
	}
	reason := strings.ReplaceAll(e.msg, "\n", " ")
	if hj, ok := w.(http.Hijacker); ok {
		conn, buf, err := hj.Hijack()
		if err == nil {
			defer conn.Close()
			writeRaw(buf.Writer, e.status, reason, b)
			buf.Flush()
			return
		}
	}
	w.Header().Set("Content-Type", "application/json;charset=UTF-8")
	w.WriteHeader(e.status)
	w.Write(b)
}

func writeRaw(bw *bufio.Writer, status int, reason string, body []byte) {
	fmt.Fprintf(bw, "HTTP/1.1 %d %s\r\n", status, reason)
	fmt.Fprintf(bw, "Content-Type: application/json;charset=UTF-8\r\n")
	fmt.Fprintf(bw, "Content-Length: %d\r\n", len(body))
	fmt.Fprintf(bw, "Connection: close\r\n\r\n")
	bw.Write(body)
}

func dropConn(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

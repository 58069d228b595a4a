package spec

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Severity says whether a diagnostic stops the lab (Error) or only warns.
type Severity int

// The severities.
const (
	Error Severity = iota
	Warning
)

func (s Severity) String() string {
	if s == Warning {
		return "warning"
	}
	return "error"
}

// Diagnostic is one problem found in a lab file: where it is, what is wrong
// and how to fix it.
type Diagnostic struct {
	Severity Severity
	File     string
	// Line and Col are 1-based; 0 when the problem has no place in the file
	// (for example an empty file).
	Line, Col int
	// Path is the YAML path of the offending value, for example
	// cluster.workers.memory or vpn.peers[1].address.
	Path string
	Msg  string
	Hint string
}

// Error formats the diagnostic as
//
//	lab.yaml:12:5: cluster.workers.memory: 512MiB is below ...
//	  hint: ...
//
// Warnings carry "warning: " after the position.
func (d Diagnostic) Error() string {
	var b strings.Builder
	b.WriteString(d.File)
	if d.Line > 0 {
		fmt.Fprintf(&b, ":%d:%d", d.Line, d.Col)
	}
	b.WriteString(": ")
	if d.Severity == Warning {
		b.WriteString("warning: ")
	}
	if d.Path != "" {
		b.WriteString(d.Path)
		b.WriteString(": ")
	}
	b.WriteString(d.Msg)
	if d.Hint != "" {
		b.WriteString("\n  hint: ")
		b.WriteString(d.Hint)
	}
	return b.String()
}

// Diagnostics returns the diagnostics inside an error returned by Load,
// Parse or Strict (nil when err holds none).
func Diagnostics(err error) []Diagnostic {
	var out []Diagnostic
	var walk func(error)
	walk = func(e error) {
		switch x := e.(type) {
		case nil:
		case Diagnostic:
			out = append(out, x)
		case interface{ Unwrap() []error }:
			for _, inner := range x.Unwrap() {
				walk(inner)
			}
		case interface{ Unwrap() error }:
			walk(x.Unwrap())
		}
	}
	walk(err)
	return out
}

// Strict turns warnings into errors, for --strict: it returns nil when there
// are no warnings.
func Strict(diags []Diagnostic) error {
	var errs []error
	for _, d := range diags {
		d.Severity = Error
		errs = append(errs, d)
	}
	return errors.Join(errs...)
}

// pos is a place in the file.
type pos struct{ line, col int }

// report collects diagnostics while a lab is loaded. It knows where each
// YAML path sits in the file, so that checks made on the typed value still
// point at the right line and column.
type report struct {
	file string
	// at maps a YAML path to the position of its key (for mapping fields)
	// or of the node (for list items and the document).
	at map[string]pos
	// failed holds paths whose value could not be decoded: later checks on
	// them or below them would only repeat the same problem.
	failed map[string]bool
	// netsBroken is set when the networks themselves are wrong (a role
	// missing or repeated, names repeated, subnets overlapping): addresses
	// are then neither assigned nor checked, to avoid a cascade of noise.
	netsBroken bool
	diags      []Diagnostic
}

func newReport(file string) *report {
	return &report{file: file, at: map[string]pos{}, failed: map[string]bool{}}
}

// parent returns the path one level up: a.b[2].c -> a.b[2] -> a.b -> a -> "".
func parent(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

// child joins a path and a key.
func child(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// index joins a path and a list index.
func index(path string, i int) string { return fmt.Sprintf("%s[%d]", path, i) }

// where returns the position of path, or of its nearest ancestor present in
// the file (defaults and assigned values have no position of their own).
func (r *report) where(path string) pos {
	for p := path; ; p = parent(p) {
		if at, ok := r.at[p]; ok {
			return at
		}
		if p == "" {
			return pos{}
		}
	}
}

func (r *report) suppressed(path string) bool {
	for p := path; ; p = parent(p) {
		if r.failed[p] {
			return true
		}
		if p == "" {
			return false
		}
	}
}

func (r *report) add(sev Severity, at pos, path, hint, format string, args ...any) {
	r.diags = append(r.diags, Diagnostic{Severity: sev, File: r.file, Line: at.line, Col: at.col,
		Path: path, Msg: fmt.Sprintf(format, args...), Hint: hint})
}

// errorf reports an error on a value of the typed lab, placed by its path.
func (r *report) errorf(path, hint, format string, args ...any) {
	if r.suppressed(path) {
		return
	}
	r.add(Error, r.where(path), path, hint, format, args...)
}

// warnf reports a warning on a value of the typed lab, placed by its path.
func (r *report) warnf(path, hint, format string, args ...any) {
	if r.suppressed(path) {
		return
	}
	r.add(Warning, r.where(path), path, hint, format, args...)
}

// fail reports an error while decoding the node at path and marks the path
// so that later checks stay quiet about it.
func (r *report) fail(at pos, path, hint, format string, args ...any) {
	r.failed[path] = true
	r.add(Error, at, path, hint, format, args...)
}

// result sorts the diagnostics by place and splits them: warnings as a list,
// errors joined into one error.
func (r *report) result() ([]Diagnostic, error) {
	slices.SortStableFunc(r.diags, func(a, b Diagnostic) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
	var warns []Diagnostic
	var errs []error
	seen := map[string]bool{}
	for _, d := range r.diags {
		key := d.Error()
		if seen[key] {
			continue
		}
		seen[key] = true
		if d.Severity == Warning {
			warns = append(warns, d)
		} else {
			errs = append(errs, d)
		}
	}
	return warns, errors.Join(errs...)
}

package spec

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// maxFileSize bounds what Load reads: a lab file is a few kilobytes.
const maxFileSize = 1 << 20

// Load reads the lab file at path, strictly decodes it, fills defaults,
// assigns addresses and VMIDs, and validates the result.
//
// Warnings are returned even when err is nil. err joins every error found
// (errors.Join of Diagnostic values; see Diagnostics). The returned Lab is
// non-nil whenever the file could be parsed as YAML, even with errors, so
// that callers can still show the budget; never build from a Lab with errors.
func Load(path string) (*Lab, []Diagnostic, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading lab spec: %w", err)
	}
	if len(data) > maxFileSize {
		return nil, nil, fmt.Errorf("reading lab spec %s: file is larger than %d bytes", path, maxFileSize)
	}
	return Parse(filepath.Clean(path), data)
}

// Parse is Load on bytes already read; filename is used in messages.
func Parse(filename string, data []byte) (*Lab, []Diagnostic, error) {
	r := newReport(filename)
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		r.diags = append(r.diags, syntaxDiagnostic(filename, err))
		return r.done(nil)
	}
	lab := new(Lab)
	d := &decoder{r: r, anchors: map[string]ast.Node{}}
	var body ast.Node
	docs := 0
	for _, doc := range f.Docs {
		if doc == nil || doc.Body == nil {
			continue
		}
		if _, isComment := doc.Body.(*ast.CommentGroupNode); isComment {
			continue
		}
		docs++
		if docs == 1 {
			body = doc.Body
		} else {
			r.fail(nodePos(doc.Body), "", "keep one lab per file", "the file holds more than one YAML document")
		}
	}
	if body == nil {
		r.fail(pos{}, "", "start from the reference: homelab init", "the file is empty")
		return r.done(nil)
	}
	r.at[""] = nodePos(body)
	d.collectAnchors(body)
	d.decode(body, "", reflect.ValueOf(lab).Elem())
	if !d.tooBig {
		lab.setDefaults(r)
		lab.validate(r)
	}
	return r.done(lab)
}

func (r *report) done(lab *Lab) (*Lab, []Diagnostic, error) {
	warns, err := r.result()
	return lab, warns, err
}

// syntaxDiagnostic turns a goccy/go-yaml parse error into a Diagnostic.
func syntaxDiagnostic(filename string, err error) Diagnostic {
	d := Diagnostic{Severity: Error, File: filename, Msg: "invalid YAML: " + err.Error(),
		Hint: "check the indentation (spaces, not tabs) and that each key is followed by a colon"}
	var ye interface {
		GetMessage() string
		GetToken() *token.Token
	}
	if errors.As(err, &ye) {
		at := tokenPos(ye.GetToken())
		d.Line, d.Col = at.line, at.col
		d.Msg = "invalid YAML: " + strings.TrimSpace(ye.GetMessage())
	}
	return d
}

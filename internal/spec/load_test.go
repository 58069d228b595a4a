package spec

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// render formats every diagnostic of a Parse, errors and warnings merged in
// file order, the way homelab validate prints them.
func render(warns []Diagnostic, err error) string {
	all := append(Diagnostics(err), warns...)
	slices.SortStableFunc(all, func(a, b Diagnostic) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Col - b.Col
	})
	var b strings.Builder
	for _, d := range all {
		b.WriteString(d.Error())
		b.WriteString("\n")
	}
	return b.String()
}

// TestBad loads every malformed or policy-breaking spec in testdata/bad and
// compares the full diagnostic output with NAME.golden. Run with -update to
// rewrite the goldens after a deliberate change, then review the diff.
func TestBad(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 40 {
		t.Fatalf("found %d bad specs, want at least 40", len(files))
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".yaml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			warns, perr := func() ([]Diagnostic, error) {
				_, w, e := Parse("lab.yaml", data)
				return w, e
			}()
			got := render(warns, perr)
			if got == "" {
				t.Fatalf("Parse(%s) reported nothing; a bad spec must produce an error or a warning", file)
			}
			for _, d := range append(Diagnostics(perr), warns...) {
				if d.Line == 0 && name != "empty" {
					t.Errorf("diagnostic without a position: %v", d)
				}
			}
			golden := strings.TrimSuffix(file, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("reading golden file (run go test -update to create it): %v", err)
			}
			if got != string(want) {
				t.Errorf("Parse(%s) diagnostics differ from %s\ngot:\n%s\nwant:\n%s", file, golden, got, want)
			}
		})
	}
}

// TestGood checks that the specs in testdata/good load with no error and no
// warning.
func TestGood(t *testing.T) {
	files, err := filepath.Glob("testdata/good/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			_, warns, err := Load(file)
			if err != nil || len(warns) > 0 {
				t.Errorf("Load(%s):\n%s", file, render(warns, err))
			}
		})
	}
}

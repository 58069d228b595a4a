package lb

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

// TestParseGolden parses each testdata/config/*.yaml and compares the
// errors (or "ok") with the .golden file beside it.
func TestParseGolden(t *testing.T) {
	files, _ := filepath.Glob("testdata/config/*.yaml")
	if len(files) == 0 {
		t.Fatal("no test configs")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			_, err := LoadFile(f)
			got := "ok\n"
			if err != nil {
				got = err.Error() + "\n"
			}
			golden := strings.TrimSuffix(f, ".yaml") + ".golden"
			if *update {
				os.WriteFile(golden, []byte(got), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("reading golden file (run with -update): %v", err)
			}
			if got != string(want) {
				t.Errorf("LoadFile(%s):\n%s\nwant:\n%s", f, got, want)
			}
		})
	}
}

func TestParseDefaults(t *testing.T) {
	c, err := Parse([]byte(`
frontends:
  - name: web
    listen: ["127.0.0.1:80"]
    backend: app
backends:
  - name: app
    servers: [{address: "10.0.0.1:80"}]
    healthCheck: {type: http}
`))
	if err != nil {
		t.Fatal(err)
	}
	b := c.Backends[0]
	checks := []struct {
		name      string
		got, want any
	}{
		{"protocol", c.Frontends[0].Protocol, "tcp"},
		{"balance", b.Balance, BalanceRoundRobin},
		{"weight", b.Servers[0].Weight, 1},
		{"drainTimeout", b.DrainTimeout.D(), DefaultDrainTimeout},
		{"connect", c.Timeouts.Connect.D(), DefaultConnectTimeout},
		{"idle", c.Timeouts.Idle.D(), DefaultIdleTimeout},
		{"handshake", c.Timeouts.Handshake.D(), DefaultHandshakeTimeout},
		{"check path", b.HealthCheck.Path, "/"},
		{"check status", b.HealthCheck.ExpectStatus, 200},
		{"check interval", b.HealthCheck.Interval.D(), 2 * time.Second},
		{"rise", b.HealthCheck.Rise, 2},
		{"fall", b.HealthCheck.Fall, 3},
		{"passive failures", b.Passive.Failures, 3},
		{"pipe size", c.Tuning.PipeSize, DefaultPipeSize},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("default %s = %v, want %v", ch.name, ch.got, ch.want)
		}
	}
}

// TestMarshalRoundTrip checks that a config written by another program
// (render writes it from lab.yaml) reads back the same.
func TestMarshalRoundTrip(t *testing.T) {
	c, err := LoadFile("testdata/config/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := Parse(out)
	if err != nil {
		t.Fatalf("re-parsing marshaled config: %v\n%s", err, out)
	}
	out2, _ := Marshal(c2)
	if string(out) != string(out2) {
		t.Errorf("round trip changed the config:\n%s\n---\n%s", out, out2)
	}
}

func FuzzParseConfig(f *testing.F) {
	files, _ := filepath.Glob("testdata/config/*.yaml")
	for _, p := range files {
		b, _ := os.ReadFile(p)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			if c != nil {
				t.Fatal("config returned with an error")
			}
			if strings.Contains(err.Error(), "\x00") {
				t.Fatalf("error holds NUL: %q", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("parsed config does not validate: %v", err)
		}
		out, err := Marshal(c)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		if _, err := Parse(out); err != nil {
			t.Fatalf("marshaled config does not parse: %v\n%s", err, out)
		}
	})
}

// TestDocExample keeps the complete example in docs/lb.md valid and in
// step with testdata/config/full.yaml.
func TestDocExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/lb.md")
	if err != nil {
		t.Skipf("docs/lb.md not found: %v", err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	if !ok {
		t.Fatal("docs/lb.md has no yaml example")
	}
	example, _, _ := strings.Cut(rest, "```")
	if _, err := Parse([]byte(example)); err != nil {
		t.Fatalf("the example in docs/lb.md does not parse:\n%v", err)
	}
	full, _ := os.ReadFile("testdata/config/full.yaml")
	strip := func(s string) string {
		var out []string
		for _, l := range strings.Split(s, "\n") {
			if i := strings.Index(l, " #"); i >= 0 {
				l = l[:i]
			}
			if l = strings.TrimRight(l, " "); l != "" && !strings.HasPrefix(l, "#") {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\n")
	}
	if strip(example) != strip(string(full)) {
		t.Errorf("the example in docs/lb.md and testdata/config/full.yaml differ (comments aside)")
	}
}

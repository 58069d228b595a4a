package diagram

import (
	"bytes"
	"encoding/xml"
	"flag"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/homelab-dev/homelab/internal/spec"
)

var update = flag.Bool("update", false, "rewrite testdata/lab.svg")

func testLab(t *testing.T) *spec.Lab {
	t.Helper()
	lab, _, err := spec.Load("testdata/lab.yaml")
	if err != nil {
		t.Fatalf("loading testdata/lab.yaml: %v", err)
	}
	return lab
}

// texts parses the SVG as XML and returns all its character data, one
// string per element.
func texts(t *testing.T, data []byte) []string {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(data))
	var out []string
	root := ""
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the SVG is not well-formed XML: %v", err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tok.Name.Space + " " + tok.Name.Local
			}
		case xml.CharData:
			if s := strings.TrimSpace(string(tok)); s != "" {
				out = append(out, s)
			}
		}
	}
	if root != "http://www.w3.org/2000/svg svg" {
		t.Errorf("root element = %q, want svg in the SVG namespace", root)
	}
	return out
}

func TestSVGShowsTheLab(t *testing.T) {
	lab := testLab(t)
	data := SVG(lab)
	all := strings.Join(texts(t, data), "\n")
	want := []string{"Internet", "WireGuard " + lab.VPN.Tunnel.String()}
	for _, n := range lab.Networks {
		want = append(want, n.CIDR.String(), n.Bridge)
	}
	for _, m := range lab.Machines() {
		want = append(want, m.Name)
		for _, nic := range m.NICs {
			want = append(want, nic.Address.String())
		}
	}
	for _, p := range lab.VPN.Peers {
		want = append(want, p.Name, p.Address.String())
	}
	for _, fe := range lab.LoadBalancer.Frontends {
		want = append(want, itoa(fe.Port)+"/tcp")
	}
	want = append(want, itoa(lab.VPN.ListenPort)+"/udp")
	for _, w := range want {
		if !strings.Contains(all, w) {
			t.Errorf("the diagram's text does not show %q", w)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestSVGDeterministic(t *testing.T) {
	a, b := SVG(testLab(t)), SVG(testLab(t))
	if !bytes.Equal(a, b) {
		t.Error("two drawings of the same lab differ")
	}
}

func TestSVGGolden(t *testing.T) {
	got := SVG(testLab(t))
	if *update {
		if err := os.WriteFile("testdata/lab.svg", got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("testdata/lab.svg")
	if err != nil {
		t.Fatalf("reading testdata/lab.svg (run go test -update): %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Error("the drawing differs from testdata/lab.svg (run go test -update, then look at it)")
	}
}

func TestSVGEscapes(t *testing.T) {
	lab := testLab(t)
	lab.VPN.Peers[0].Name = `<b>&"x"`
	texts(t, SVG(lab)) // fails the test if the XML is broken
}

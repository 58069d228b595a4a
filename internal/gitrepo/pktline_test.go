package gitrepo

import (
	"bufio"
	"strings"
	"testing"
)

const (
	idA = "1111111111111111111111111111111111111111"
	idB = "2222222222222222222222222222222222222222"
	idZ = "0000000000000000000000000000000000000000"
)

func pkts(lines ...string) string {
	var b strings.Builder
	for _, l := range lines {
		if l == "" {
			b.WriteString("0000")
			continue
		}
		b.Write(pktLine(l))
	}
	return b.String()
}

func TestParseAdvertisement(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		refs     map[string]string
		caps     []string
		err      string
	}{
		{name: "empty repository",
			in:   pkts(idZ+" capabilities^{}\x00report-status delete-refs side-band-64k quiet atomic ofs-delta object-format=sha1 agent=git/2.39.5\n", ""),
			refs: map[string]string{}, caps: []string{"report-status", "atomic", "object-format"}},
		{name: "refs",
			in:   pkts(idA+" refs/heads/main\x00report-status\n", idB+" refs/heads/other\n", idA+" refs/tags/v1\n", ""),
			refs: map[string]string{"refs/heads/main": idA, "refs/heads/other": idB, "refs/tags/v1": idA}, caps: []string{"report-status"}},
		{name: "version 1 line",
			in:   pkts("version 1\n", idA+" refs/heads/main\x00report-status\n", ""),
			refs: map[string]string{"refs/heads/main": idA}, caps: []string{"report-status"}},
		{name: "shallow lines skipped",
			in:   pkts(idA+" refs/heads/main\x00\n", "shallow "+idB+"\n", ""),
			refs: map[string]string{"refs/heads/main": idA}},
		{name: "no newline", in: pkts(idA+" refs/heads/main", ""), refs: map[string]string{"refs/heads/main": idA}},
		{name: "ERR", in: pkts("ERR access denied\x1b[31m\n"), err: "the server refused: access denied?[31m"},
		{name: "eof", in: pkts(idA + " refs/heads/main\n"), err: "unexpected EOF"},
		{name: "nothing", in: "", err: "unexpected EOF"},
		{name: "short pkt", in: "0003", err: "bad pkt-line length 3"},
		{name: "long pkt", in: "fff1", err: "bad pkt-line length"},
		{name: "not hex", in: "zz00", err: "bad pkt-line length"},
		{name: "sign", in: "+004", err: "bad pkt-line length"},
		{name: "truncated", in: "0010abc", err: "unexpected EOF"},
		{name: "bad id", in: pkts("xyz refs/heads/main\n", ""), err: "not a 40-digit object id"},
		{name: "upper-case id", in: pkts(strings.ToUpper("abcdef1234abcdef1234abcdef1234abcdef1234")+" refs/heads/main\n", ""), err: "not a 40-digit"},
		{name: "no ref", in: pkts(idA+"\n", ""), err: "malformed line"},
		{name: "duplicate", in: pkts(idA+" refs/heads/main\n", idB+" refs/heads/main\n", ""), err: "listed twice"},
		{name: "zero capabilities later", in: pkts(idA+" refs/heads/main\n", idZ+" capabilities^{}\n", ""), refs: map[string]string{"refs/heads/main": idA, "capabilities^{}": idZ}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			adv, err := ParseAdvertisement(bufio.NewReader(strings.NewReader(tc.in)))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("ParseAdvertisement = %v, want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseAdvertisement: %v", err)
			}
			if len(adv.Refs) != len(tc.refs) {
				t.Errorf("refs = %v, want %v", adv.Refs, tc.refs)
			}
			for name, id := range tc.refs {
				if adv.Refs[name].String() != id {
					t.Errorf("ref %s = %s, want %s", name, adv.Refs[name], id)
				}
			}
			for _, c := range tc.caps {
				if !adv.Has(c) {
					t.Errorf("capability %s missing from %v", c, adv.Caps)
				}
			}
		})
	}
}

func TestParseReport(t *testing.T) {
	for _, tc := range []struct{ name, in, err string }{
		{"ok", pkts("unpack ok\n", "ok refs/heads/main\n", ""), ""},
		{"unpack failed", pkts("unpack index-pack abnormal exit\n", "ng refs/heads/main unpacker error\n", ""), "could not unpack the push: index-pack abnormal exit"},
		{"ng", pkts("unpack ok\n", "ng refs/heads/main non-fast-forward\n", ""), "refused refs/heads/main: non-fast-forward"},
		{"garbage", pkts("unpack ok\n", "what\n", ""), "unexpected line"},
		{"eof", pkts("unpack ok\n"), "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := parseReport(bufio.NewReader(strings.NewReader(tc.in)))
			if (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("parseReport = %v, want %q", err, tc.err)
			}
		})
	}
}

// FuzzParseAdvertisement feeds the server's side of the protocol (outside
// input) to the parsers: they must not panic, must bound what they read,
// and what they accept must be well formed.
func FuzzParseAdvertisement(f *testing.F) {
	f.Add([]byte(pkts(idZ+" capabilities^{}\x00report-status agent=git/2.39.5\n", "")))
	f.Add([]byte(pkts("version 1\n", idA+" refs/heads/main\x00report-status\n", idB+" refs/heads/x\n", "")))
	f.Add([]byte(pkts("ERR no\n")))
	f.Add([]byte(pkts("unpack ok\n", "ok refs/heads/main\n", "")))
	f.Add([]byte("0003"))
	f.Add([]byte("fff0"))
	f.Fuzz(func(t *testing.T, data []byte) {
		adv, err := ParseAdvertisement(bufio.NewReader(strings.NewReader(string(data))))
		if err == nil {
			for name := range adv.Refs {
				if name == "" || strings.ContainsAny(name, " \x00") {
					t.Errorf("accepted ref name %q", name)
				}
			}
		} else if len(err.Error()) > 400 {
			t.Errorf("error of %d bytes: the server's text is not bounded", len(err.Error()))
		}
		if err := parseReport(bufio.NewReader(strings.NewReader(string(data)))); err != nil && len(err.Error()) > 4000 {
			t.Errorf("report error of %d bytes", len(err.Error()))
		}
	})
}

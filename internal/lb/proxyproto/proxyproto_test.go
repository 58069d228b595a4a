package proxyproto

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

var (
	src4 = netip.MustParseAddrPort("192.0.2.10:51000")
	dst4 = netip.MustParseAddrPort("198.51.100.1:443")
	src6 = netip.MustParseAddrPort("[2001:db8::10]:51000")
	dst6 = netip.MustParseAddrPort("[2001:db8::1]:443")
)

func TestAppend(t *testing.T) {
	tests := []struct {
		name string
		got  []byte
		want []byte
	}{
		{"v1 tcp4", AppendV1(nil, src4, dst4), []byte("PROXY TCP4 192.0.2.10 198.51.100.1 51000 443\r\n")},
		{"v1 tcp6", AppendV1(nil, src6, dst6), []byte("PROXY TCP6 2001:db8::10 2001:db8::1 51000 443\r\n")},
		{"v1 mixed", AppendV1(nil, src4, dst6), []byte("PROXY TCP6 ::ffff:192.0.2.10 2001:db8::1 51000 443\r\n")},
		{"v1 unknown", AppendV1(nil, netip.AddrPort{}, dst4), []byte("PROXY UNKNOWN\r\n")},
		{"v2 tcp4", AppendV2(nil, src4, dst4), append([]byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"),
			192, 0, 2, 10, 198, 51, 100, 1, 0xc7, 0x38, 0x01, 0xbb)},
		{"v2 local", AppendV2(nil, netip.AddrPort{}, dst4), []byte("\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00")},
	}
	for _, tt := range tests {
		if !bytes.Equal(tt.got, tt.want) {
			t.Errorf("%s: got %q, want %q", tt.name, tt.got, tt.want)
		}
	}
	if n := len(AppendV2(nil, src6, dst6)); n != 16+36 {
		t.Errorf("v2 tcp6 header is %d bytes, want 52", n)
	}
}

func TestParse(t *testing.T) {
	v2tlv := AppendV2(nil, src4, dst4)
	v2tlv[15] += 7 // announce a 7-byte TLV after the addresses
	v2tlv = append(v2tlv, 0x04, 0, 4, 'n', 'o', 'o', 'p')
	tests := []struct {
		name    string
		in      []byte
		want    Header
		wantN   int
		wantErr error
	}{
		{"v1 tcp4", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 51000 443\r\nGET /"), Header{Version: 1, Src: src4, Dst: dst4}, 46, nil},
		{"v1 tcp6", AppendV1(nil, src6, dst6), Header{Version: 1, Src: src6, Dst: dst6}, 47, nil},
		{"v1 unknown", []byte("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), Header{Version: 1, Local: true}, 35, nil},
		{"v2 tcp4", AppendV2(nil, src4, dst4), Header{Version: 2, Src: src4, Dst: dst4}, 28, nil},
		{"v2 tcp6", AppendV2(nil, src6, dst6), Header{Version: 2, Src: src6, Dst: dst6}, 52, nil},
		{"v2 with TLV", v2tlv, Header{Version: 2, Src: src4, Dst: dst4}, 35, nil},
		{"v2 local", AppendV2(nil, netip.AddrPort{}, netip.AddrPort{}), Header{Version: 2, Local: true}, 16, nil},
		{"empty", nil, Header{}, 0, ErrIncomplete},
		{"v1 prefix", []byte("PROX"), Header{}, 0, ErrIncomplete},
		{"v1 no CRLF yet", []byte("PROXY TCP4 192.0.2.10"), Header{}, 0, ErrIncomplete},
		{"v2 prefix", []byte("\r\n\r\n\x00"), Header{}, 0, ErrIncomplete},
		{"v2 body missing", AppendV2(nil, src4, dst4)[:20], Header{}, 0, ErrIncomplete},
		{"http", []byte("GET / HTTP/1.1\r\n"), Header{}, 0, ErrNoHeader},
		{"tls", []byte{0x16, 3, 1}, Header{}, 0, ErrNoHeader},
		{"v1 lowercase", []byte("proxy TCP4"), Header{}, 0, ErrNoHeader},
		{"v1 bare LF", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 51000 443\n"), Header{}, 0, ErrInvalid},
		{"v1 family mismatch", []byte("PROXY TCP4 2001:db8::1 198.51.100.1 1 2\r\n"), Header{}, 0, ErrInvalid},
		{"v1 port range", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 70000 443\r\n"), Header{}, 0, ErrInvalid},
		{"v1 leading zero", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 0443 443\r\n"), Header{}, 0, ErrInvalid},
		{"v1 double space", []byte("PROXY TCP4  192.0.2.10 198.51.100.1 1 2\r\n"), Header{}, 0, ErrInvalid},
		{"v1 too long", append([]byte("PROXY "), bytes.Repeat([]byte("A"), 120)...), Header{}, 0, ErrInvalid},
		{"v2 bad version", []byte("\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c123456789012"), Header{}, 0, ErrInvalid},
		{"v2 short addresses", []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x04abcd"), Header{}, 0, ErrInvalid},
		{"v2 too long", []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\xff\xff"), Header{}, 0, ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, n, err := Parse(tt.in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Parse(%q) error = %v, want %v", tt.in, err, tt.wantErr)
			}
			if h != tt.want || n != tt.wantN {
				t.Errorf("Parse(%q) = %+v, %d, want %+v, %d", tt.in, h, n, tt.want, tt.wantN)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(AppendV1(nil, src4, dst4))
	f.Add(AppendV1(nil, src6, dst6))
	f.Add(AppendV2(nil, src4, dst4))
	f.Add(AppendV2(nil, src6, dst6))
	f.Add(AppendV2(nil, netip.AddrPort{}, netip.AddrPort{}))
	f.Add([]byte("PROXY UNKNOWN\r\n"))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := Parse(b)
		if err != nil {
			if n != 0 {
				t.Fatalf("error %v with length %d", err, n)
			}
			return
		}
		if n <= 0 || n > len(b) {
			t.Fatalf("length %d out of range for %d bytes", n, len(b))
		}
		// A prefix of a header is never a header.
		if _, _, err := Parse(b[:n-1]); err == nil {
			t.Fatalf("prefix of %q parsed too", b[:n])
		}
		if h.Local {
			return
		}
		// What we read, we can write back and read again.
		for _, out := range [][]byte{AppendV1(nil, h.Src, h.Dst), AppendV2(nil, h.Src, h.Dst)} {
			h2, n2, err := Parse(out)
			if err != nil || n2 != len(out) {
				t.Fatalf("re-parse of %q: %v", out, err)
			}
			if h.Src.Addr().Unmap() != h2.Src.Addr().Unmap() || h.Src.Port() != h2.Src.Port() || h.Dst.Port() != h2.Dst.Port() {
				t.Fatalf("round trip %+v -> %+v", h, h2)
			}
		}
	})
}

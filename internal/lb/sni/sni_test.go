package sni

import (
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"
)

// clientHello captures the first flight a crypto/tls client sends.
func clientHello(t testing.TB, serverName string, maxVersion uint16) []byte {
	t.Helper()
	c, s := net.Pipe()
	go func() {
		tls.Client(c, &tls.Config{ServerName: serverName, InsecureSkipVerify: true, MaxVersion: maxVersion}).Handshake()
	}()
	s.SetReadDeadline(time.Now().Add(2 * time.Second))
	var out []byte
	buf := make([]byte, 64<<10)
	for {
		n, err := s.Read(buf)
		out = append(out, buf[:n]...)
		if _, err2 := ServerName(out); err2 != ErrIncomplete || err != nil {
			break
		}
	}
	s.Close()
	c.Close()
	return out
}

// split re-frames a handshake record as records of at most size bytes.
func split(rec []byte, size int) []byte {
	body := rec[5:]
	var out []byte
	for len(body) > 0 {
		n := min(size, len(body))
		out = append(out, 0x16, rec[1], rec[2], byte(n>>8), byte(n))
		out = append(out, body[:n]...)
		body = body[n:]
	}
	return out
}

func TestServerName(t *testing.T) {
	tls13 := clientHello(t, "api.lab.example", tls.VersionTLS13)
	tls12 := clientHello(t, "Cloud.Apps.Example", tls.VersionTLS12)
	noSNI := clientHello(t, "", tls.VersionTLS13)
	tests := []struct {
		name    string
		in      []byte
		want    string
		wantErr error
	}{
		{"tls13", tls13, "api.lab.example", nil},
		{"tls12 lowercased", tls12, "cloud.apps.example", nil},
		{"no sni", noSNI, "", nil},
		{"split in records of 100 bytes", split(tls13, 100), "api.lab.example", nil},
		{"split in records of 1 byte", split(tls13, 1), "api.lab.example", nil},
		{"first 5 bytes", tls13[:5], "", ErrIncomplete},
		{"all but one byte", tls13[:len(tls13)-1], "", ErrIncomplete},
		{"empty", nil, "", ErrIncomplete},
		{"http", []byte("GET / HTTP/1.1\r\n"), "", ErrNotTLS},
		{"ssh", []byte("SSH-2.0-OpenSSH\r\n"), "", ErrNotTLS},
		{"one byte not tls", []byte{'G'}, "", ErrNotTLS},
		{"alert record", []byte{0x15, 3, 3, 0, 2, 2, 40}, "", ErrNotTLS},
		{"server hello", []byte{0x16, 3, 3, 0, 4, 2, 0, 0, 0}, "", ErrNotTLS},
		{"huge hello", []byte{0x16, 3, 1, 0x40, 0, 1, 0xff, 0xff, 0xff}, "", ErrTooLarge},
		{"zero length record", []byte{0x16, 3, 1, 0, 0}, "", ErrInvalid},
		{"truncated body", []byte{0x16, 3, 1, 0, 8, 1, 0, 0, 4, 3, 3, 0, 0}, "", ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ServerName(tt.in)
			if !errors.Is(err, tt.wantErr) || got != tt.want {
				t.Errorf("ServerName = %q, %v, want %q, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
	// Every strict prefix asks for more.
	for i := range len(tls13) {
		if _, err := ServerName(tls13[:i]); err != ErrIncomplete {
			t.Fatalf("prefix of %d bytes: %v, want ErrIncomplete", i, err)
		}
	}
}

func FuzzServerName(f *testing.F) {
	f.Add(clientHello(f, "api.lab.example", tls.VersionTLS13))
	f.Add(clientHello(f, "x.example", tls.VersionTLS12))
	f.Add(split(clientHello(f, "a.example", tls.VersionTLS13), 200))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		name, err := ServerName(b)
		if err != nil {
			if name != "" {
				t.Fatalf("name %q with error %v", name, err)
			}
			return
		}
		if len(name) > 255 {
			t.Fatalf("name of %d bytes", len(name))
		}
		// Bytes after the ClientHello do not change the answer.
		name2, err := ServerName(append(b[:len(b):len(b)], 0x17, 3, 3, 0, 1, 0))
		if err != nil || name2 != name {
			t.Fatalf("with trailing bytes: %q, %v; alone: %q", name2, err, name)
		}
	})
}

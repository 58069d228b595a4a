// Package sni reads the server name from a TLS ClientHello without
// terminating TLS, so a proxy can route on it and forward the bytes as they
// came.
package sni

import (
	"encoding/binary"
	"errors"
	"strings"
)

// Errors returned by ServerName.
var (
	// ErrIncomplete means b holds the start of a ClientHello; read more.
	ErrIncomplete = errors.New("sni: incomplete ClientHello")
	// ErrNotTLS means b does not start with a TLS handshake record.
	ErrNotTLS = errors.New("sni: not a TLS ClientHello")
	// ErrInvalid means the ClientHello is malformed.
	ErrInvalid = errors.New("sni: malformed ClientHello")
	// ErrTooLarge means the ClientHello is longer than MaxHello.
	ErrTooLarge = errors.New("sni: ClientHello too large")
)

// MaxHello bounds the ClientHello handshake message that ServerName will
// wait for. Real ones are under 2 KiB (about 1.8 KiB with a post-quantum
// key share); the bound keeps a peek's memory small.
const MaxHello = 16 << 10

const recordHeader = 5

// ServerName parses the TLS records at the start of b and returns the
// lowercased server_name of the ClientHello, or "" when it has none. The
// handshake message may span several records. It returns ErrIncomplete
// while more bytes are needed.
func ServerName(b []byte) (string, error) {
	var hello []byte // handshake bytes gathered from records
	helloLen := -1
	for {
		if len(b) < recordHeader {
			if len(b) > 0 && b[0] != 0x16 {
				return "", ErrNotTLS
			}
			if len(b) > 1 && b[1] != 3 {
				return "", ErrNotTLS
			}
			return "", ErrIncomplete
		}
		if b[0] != 0x16 || b[1] != 3 {
			return "", ErrNotTLS
		}
		rlen := int(binary.BigEndian.Uint16(b[3:5]))
		if rlen == 0 || rlen > 1<<14 {
			return "", ErrInvalid
		}
		if len(b) < recordHeader+rlen {
			// The first record may already tell the message is too big.
			if helloLen < 0 && len(hello) == 0 && len(b) >= recordHeader+4 {
				if b[recordHeader] != 1 {
					return "", ErrNotTLS
				}
				if n := int(b[recordHeader+1])<<16 | int(b[recordHeader+2])<<8 | int(b[recordHeader+3]); n > MaxHello {
					return "", ErrTooLarge
				}
			}
			return "", ErrIncomplete
		}
		hello = append(hello, b[recordHeader:recordHeader+rlen]...)
		b = b[recordHeader+rlen:]
		if helloLen < 0 && len(hello) >= 4 {
			if hello[0] != 1 {
				return "", ErrNotTLS
			}
			helloLen = int(hello[1])<<16 | int(hello[2])<<8 | int(hello[3])
			if helloLen > MaxHello {
				return "", ErrTooLarge
			}
		}
		if helloLen >= 0 && len(hello) >= 4+helloLen {
			return parseHello(hello[4 : 4+helloLen])
		}
	}
}

// reader is a bounds-checked cursor.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) skip(n int) {
	if n > len(r.b) {
		r.bad = true
		r.b = nil
		return
	}
	r.b = r.b[n:]
}

func (r *reader) u8() int {
	if len(r.b) < 1 {
		r.bad = true
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return int(v)
}

func (r *reader) u16() int {
	if len(r.b) < 2 {
		r.bad = true
		r.b = nil
		return 0
	}
	v := binary.BigEndian.Uint16(r.b)
	r.b = r.b[2:]
	return int(v)
}

func (r *reader) bytes(n int) []byte {
	if n > len(r.b) {
		r.bad = true
		r.b = nil
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}

func parseHello(body []byte) (string, error) {
	r := &reader{b: body}
	r.skip(2 + 32)  // legacy_version, random
	r.skip(r.u8())  // legacy_session_id
	r.skip(r.u16()) // cipher_suites
	r.skip(r.u8())  // legacy_compression_methods
	if r.bad {
		return "", ErrInvalid
	}
	if len(r.b) == 0 {
		return "", nil // no extensions (old clients)
	}
	exts := &reader{b: r.bytes(r.u16())}
	if r.bad {
		return "", ErrInvalid
	}
	for len(exts.b) > 0 {
		typ := exts.u16()
		data := exts.bytes(exts.u16())
		if exts.bad {
			return "", ErrInvalid
		}
		if typ != 0 { // server_name
			continue
		}
		d := &reader{b: data}
		list := &reader{b: d.bytes(d.u16())}
		if d.bad {
			return "", ErrInvalid
		}
		for len(list.b) > 0 {
			nameType := list.u8()
			name := list.bytes(list.u16())
			if list.bad {
				return "", ErrInvalid
			}
			if nameType == 0 {
				if len(name) == 0 || len(name) > 255 {
					return "", ErrInvalid
				}
				s := strings.ToLower(strings.TrimSuffix(string(name), "."))
				for i := 0; i < len(s); i++ {
					if c := s[i]; c <= ' ' || c >= 0x7f {
						return "", ErrInvalid
					}
				}
				return s, nil
			}
		}
		return "", nil
	}
	return "", nil
}

// Package proxyproto reads and writes PROXY protocol headers (versions 1
// and 2, as specified by HAProxy's proxy-protocol.txt), which carry a
// client's address across a TCP proxy.
package proxyproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"strconv"
)

// Errors returned by Parse.
var (
	// ErrIncomplete means b holds the start of a valid header; read more.
	ErrIncomplete = errors.New("proxyproto: incomplete header")
	// ErrNoHeader means b does not start with a PROXY header.
	ErrNoHeader = errors.New("proxyproto: no PROXY protocol header")
	// ErrInvalid means the header is malformed.
	ErrInvalid = errors.New("proxyproto: malformed header")
)

// MaxV1Len is the longest version 1 header, CRLF included.
const MaxV1Len = 107

// MaxV2Len is the longest version 2 header Parse accepts (16 fixed bytes
// plus addresses and TLVs). The protocol allows 65551; real senders stay
// far below.
const MaxV2Len = 16 + 2048

var v2sig = []byte("\r\n\r\n\x00\r\nQUIT\n")

// Header is a parsed PROXY header.
type Header struct {
	Version int // 1 or 2
	// Local is true for a v2 LOCAL command or a v1 UNKNOWN protocol: the
	// connection's own addresses apply, Src and Dst are zero.
	Local bool
	// Datagram is true when a v2 header announces UDP.
	Datagram bool
	Src, Dst netip.AddrPort
}

// Parse parses the PROXY header at the start of b and returns it with its
// length in bytes. It returns ErrIncomplete while b is a strict prefix of a
// possibly valid header.
func Parse(b []byte) (Header, int, error) {
	if len(b) == 0 {
		return Header{}, 0, ErrIncomplete
	}
	switch b[0] {
	case 'P':
		return parseV1(b)
	case '\r':
		return parseV2(b)
	}
	return Header{}, 0, ErrNoHeader
}

func parseV1(b []byte) (Header, int, error) {
	const prefix = "PROXY "
	n := min(len(b), len(prefix))
	if string(b[:n]) != prefix[:n] {
		return Header{}, 0, ErrNoHeader
	}
	end := bytes.IndexByte(b[:min(len(b), MaxV1Len)], '\n')
	if end < 0 {
		if len(b) >= MaxV1Len {
			return Header{}, 0, ErrInvalid
		}
		return Header{}, 0, ErrIncomplete
	}
	if end == 0 || b[end-1] != '\r' {
		return Header{}, 0, ErrInvalid
	}
	line := string(b[len(prefix) : end-1])
	h := Header{Version: 1}
	fields := splitSpaces(line)
	if len(fields) == 0 {
		return Header{}, 0, ErrInvalid
	}
	switch fields[0] {
	case "UNKNOWN":
		h.Local = true
		return h, end + 1, nil
	case "TCP4", "TCP6":
	default:
		return Header{}, 0, ErrInvalid
	}
	if len(fields) != 5 {
		return Header{}, 0, ErrInvalid
	}
	src, err1 := netip.ParseAddr(fields[1])
	dst, err2 := netip.ParseAddr(fields[2])
	sp, err3 := parsePort(fields[3])
	dp, err4 := parsePort(fields[4])
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		return Header{}, 0, ErrInvalid
	}
	want4 := fields[0] == "TCP4"
	if src.Is4() != want4 || dst.Is4() != want4 || src.Zone() != "" || dst.Zone() != "" {
		return Header{}, 0, ErrInvalid
	}
	h.Src = netip.AddrPortFrom(src, sp)
	h.Dst = netip.AddrPortFrom(dst, dp)
	return h, end + 1, nil
}

func splitSpaces(s string) []string {
	var out []string
	for s != "" {
		i := 0
		for i < len(s) && s[i] != ' ' {
			i++
		}
		if i == 0 { // two spaces in a row
			return nil
		}
		out = append(out, s[:i])
		if i == len(s) {
			break
		}
		s = s[i+1:]
		if s == "" { // trailing space
			return nil
		}
	}
	return out
}

func parsePort(s string) (uint16, error) {
	if len(s) > 1 && s[0] == '0' {
		return 0, ErrInvalid
	}
	v, err := strconv.ParseUint(s, 10, 16)
	return uint16(v), err
}

func parseV2(b []byte) (Header, int, error) {
	n := min(len(b), len(v2sig))
	if !bytes.Equal(b[:n], v2sig[:n]) {
		return Header{}, 0, ErrNoHeader
	}
	if len(b) < 16 {
		return Header{}, 0, ErrIncomplete
	}
	verCmd, fam := b[12], b[13]
	if verCmd>>4 != 2 {
		return Header{}, 0, ErrInvalid
	}
	length := int(binary.BigEndian.Uint16(b[14:16]))
	total := 16 + length
	if total > MaxV2Len {
		return Header{}, 0, ErrInvalid
	}
	if len(b) < total {
		return Header{}, 0, ErrIncomplete
	}
	h := Header{Version: 2}
	switch verCmd & 0xf {
	case 0:
		h.Local = true
		return h, total, nil
	case 1:
	default:
		return Header{}, 0, ErrInvalid
	}
	body := b[16:total]
	switch fam & 0xf {
	case 0: // unspecified transport
	case 1:
	case 2:
		h.Datagram = true
	default:
		return Header{}, 0, ErrInvalid
	}
	switch fam >> 4 {
	case 0, 3: // UNSPEC, UNIX: addresses we cannot use
		h.Local = true
	case 1:
		if len(body) < 12 {
			return Header{}, 0, ErrInvalid
		}
		h.Src = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[0:4])), binary.BigEndian.Uint16(body[8:10]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom4([4]byte(body[4:8])), binary.BigEndian.Uint16(body[10:12]))
	case 2:
		if len(body) < 36 {
			return Header{}, 0, ErrInvalid
		}
		h.Src = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[0:16])), binary.BigEndian.Uint16(body[32:34]))
		h.Dst = netip.AddrPortFrom(netip.AddrFrom16([16]byte(body[16:32])), binary.BigEndian.Uint16(body[34:36]))
	default:
		return Header{}, 0, ErrInvalid
	}
	return h, total, nil
}

// AppendV1 appends a version 1 header for a TCP connection from src to dst.
// Mixed address families are sent as IPv6 (IPv4-mapped).
func AppendV1(b []byte, src, dst netip.AddrPort) []byte {
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	if !src.IsValid() || !dst.IsValid() {
		return append(b, "PROXY UNKNOWN\r\n"...)
	}
	proto := "TCP4 "
	if !sa.Is4() || !da.Is4() {
		proto = "TCP6 "
		sa, da = as16(sa), as16(da)
	}
	b = append(b, "PROXY "...)
	b = append(b, proto...)
	b = sa.WithZone("").AppendTo(b)
	b = append(b, ' ')
	b = da.WithZone("").AppendTo(b)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(src.Port()), 10)
	b = append(b, ' ')
	b = strconv.AppendUint(b, uint64(dst.Port()), 10)
	return append(b, '\r', '\n')
}

func as16(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.AddrFrom16(a.As16())
	}
	return a
}

// AppendV2 appends a version 2 PROXY header for a TCP connection from src
// to dst (or a LOCAL header when either is invalid).
func AppendV2(b []byte, src, dst netip.AddrPort) []byte {
	b = append(b, v2sig...)
	if !src.IsValid() || !dst.IsValid() {
		return append(b, 0x20, 0x00, 0, 0)
	}
	sa, da := src.Addr().Unmap(), dst.Addr().Unmap()
	if sa.Is4() && da.Is4() {
		b = append(b, 0x21, 0x11, 0, 12)
		s4, d4 := sa.As4(), da.As4()
		b = append(b, s4[:]...)
		b = append(b, d4[:]...)
	} else {
		b = append(b, 0x21, 0x21, 0, 36)
		s16, d16 := sa.As16(), da.As16()
		b = append(b, s16[:]...)
		b = append(b, d16[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, src.Port())
	return binary.BigEndian.AppendUint16(b, dst.Port())
}

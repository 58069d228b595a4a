package gitrepo

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// maxPktLen is the largest pkt-line git sends: 65520 bytes with the
// 4-byte length.
const maxPktLen = 65520

// errFlush is what readPkt returns for a flush-pkt ("0000").
var errFlush = errors.New("flush-pkt")

// pktLine frames data as one pkt-line.
func pktLine(data string) []byte {
	return []byte(fmt.Sprintf("%04x%s", len(data)+4, data))
}

// readPkt reads one pkt-line's payload; errFlush for "0000". The server's
// input is outside input: lengths are checked and bounded.
func readPkt(r *bufio.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	n, err := strconv.ParseUint(string(hdr[:]), 16, 16)
	if err != nil || strings.ContainsAny(string(hdr[:]), "+-") {
		return nil, fmt.Errorf("bad pkt-line length %q", hdr[:])
	}
	switch {
	case n == 0:
		return nil, errFlush
	case n < 4 || n > maxPktLen:
		return nil, fmt.Errorf("bad pkt-line length %d", n)
	}
	buf := make([]byte, n-4)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, fmt.Errorf("reading a pkt-line: %w", io.ErrUnexpectedEOF)
	}
	return buf, nil
}

// Advertisement is what receive-pack (or upload-pack) sends first: the
// refs with their ids, and the server's capabilities.
type Advertisement struct {
	Refs map[string]ID
	Caps map[string]string
}

// Has reports whether the server announced capability c.
func (a *Advertisement) Has(c string) bool { _, ok := a.Caps[c]; return ok }

// ParseAdvertisement reads a protocol v0/v1 ref advertisement up to its
// flush-pkt. An empty repository advertises only
// "0{40} capabilities^{}" with the capabilities; that gives no refs.
func ParseAdvertisement(r *bufio.Reader) (*Advertisement, error) {
	adv := &Advertisement{Refs: map[string]ID{}, Caps: map[string]string{}}
	for i := 0; ; i++ {
		line, err := readPkt(r)
		if errors.Is(err, errFlush) {
			return adv, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading the ref advertisement: %w", err)
		}
		s := strings.TrimSuffix(string(line), "\n")
		if i == 0 && s == "version 1" {
			i = -1
			continue
		}
		if strings.HasPrefix(s, "ERR ") {
			return nil, fmt.Errorf("the server refused: %s", sanitize(strings.TrimPrefix(s, "ERR ")))
		}
		if strings.HasPrefix(s, "shallow ") {
			continue
		}
		if i == 0 {
			if nul := strings.IndexByte(s, 0); nul >= 0 {
				for _, c := range strings.Fields(s[nul+1:]) {
					k, v, _ := strings.Cut(c, "=")
					adv.Caps[k] = v
				}
				s = s[:nul]
			}
		}
		hexID, name, ok := strings.Cut(s, " ")
		if !ok || name == "" || strings.ContainsAny(name, " \x00") {
			return nil, fmt.Errorf("reading the ref advertisement: malformed line %q", sanitize(s))
		}
		id, err := ParseID(hexID)
		if err != nil {
			return nil, fmt.Errorf("reading the ref advertisement: %w", err)
		}
		if i == 0 && id.IsZero() && name == "capabilities^{}" {
			continue
		}
		if _, dup := adv.Refs[name]; dup {
			return nil, fmt.Errorf("reading the ref advertisement: ref %s listed twice", sanitize(name))
		}
		adv.Refs[name] = id
	}
}

// parseReport reads receive-pack's report-status: "unpack ok" then one
// "ok <ref>" or "ng <ref> <reason>" per command, up to a flush-pkt.
// It returns an error for anything but an unpacked pack with every ref
// accepted.
func parseReport(r *bufio.Reader) error {
	first, err := readPkt(r)
	if err != nil {
		return fmt.Errorf("reading the push report: %w", err)
	}
	s := strings.TrimSuffix(string(first), "\n")
	if s != "unpack ok" {
		return fmt.Errorf("the server could not unpack the push: %s", sanitize(strings.TrimPrefix(s, "unpack ")))
	}
	var errs []error
	for {
		line, err := readPkt(r)
		if errors.Is(err, errFlush) {
			return errors.Join(errs...)
		}
		if err != nil {
			return fmt.Errorf("reading the push report: %w", err)
		}
		s := strings.TrimSuffix(string(line), "\n")
		switch {
		case strings.HasPrefix(s, "ok "):
		case strings.HasPrefix(s, "ng "):
			ref, reason, _ := strings.Cut(strings.TrimPrefix(s, "ng "), " ")
			if len(errs) < 5 {
				errs = append(errs, fmt.Errorf("the server refused %s: %s", sanitize(ref), sanitize(reason)))
			}
		default:
			return fmt.Errorf("reading the push report: unexpected line %q", sanitize(s))
		}
	}
}

// sanitize keeps what a server says printable and short before it goes
// into an error.
func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

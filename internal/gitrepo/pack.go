package gitrepo

import (
	"bytes"
	"compress/zlib"
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"io"
)

// writePack writes objects as a version 2 packfile: "PACK", version,
// object count, each object (type and size header, zlib data, no deltas)
// and the SHA-1 of all of it.
func writePack(w io.Writer, objs []object) error {
	h := sha1.New()
	mw := io.MultiWriter(w, h)
	var hdr [12]byte
	copy(hdr[:4], "PACK")
	binary.BigEndian.PutUint32(hdr[4:8], 2)
	binary.BigEndian.PutUint32(hdr[8:12], uint32(len(objs)))
	if _, err := mw.Write(hdr[:]); err != nil {
		return err
	}
	var buf bytes.Buffer
	for _, o := range objs {
		buf.Reset()
		buf.Write(objectHeader(o.typ, len(o.data)))
		zw, err := zlib.NewWriterLevel(&buf, zlib.BestSpeed)
		if err != nil {
			return err
		}
		if _, err := zw.Write(o.data); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
		if _, err := mw.Write(buf.Bytes()); err != nil {
			return err
		}
	}
	_, err := w.Write(h.Sum(nil))
	return err
}

// objectHeader is a pack entry's header: the type in bits 4-6 of the first
// byte, the size in its low 4 bits then 7 bits per following byte, the
// high bit saying another byte follows.
func objectHeader(typ, size int) []byte {
	b := []byte{byte(typ<<4) | byte(size&0x0f)}
	size >>= 4
	for size > 0 {
		b[len(b)-1] |= 0x80
		b = append(b, byte(size&0x7f))
		size >>= 7
	}
	return b
}

// readPack parses a packfile written without deltas (as writePack writes
// them) back into objects. Tests use it to check the format.
func readPack(data []byte) ([]object, error) {
	if len(data) < 32 || string(data[:4]) != "PACK" || binary.BigEndian.Uint32(data[4:8]) != 2 {
		return nil, fmt.Errorf("not a version 2 packfile")
	}
	body, trailer := data[:len(data)-sha1.Size], data[len(data)-sha1.Size:]
	if sum := sha1.Sum(body); !bytes.Equal(sum[:], trailer) {
		return nil, fmt.Errorf("packfile checksum mismatch")
	}
	n := binary.BigEndian.Uint32(data[8:12])
	r := bytes.NewReader(body[12:])
	var out []object
	for range n {
		c, err := r.ReadByte()
		if err != nil {
			return nil, fmt.Errorf("reading an object header: %w", err)
		}
		typ, size, shift := int(c>>4&7), int(c&0x0f), 4
		for c&0x80 != 0 {
			if c, err = r.ReadByte(); err != nil {
				return nil, fmt.Errorf("reading an object header: %w", err)
			}
			size |= int(c&0x7f) << shift
			shift += 7
		}
		zr, err := zlib.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("reading an object: %w", err)
		}
		d, err := io.ReadAll(zr)
		if err != nil {
			return nil, fmt.Errorf("reading an object: %w", err)
		}
		if len(d) != size {
			return nil, fmt.Errorf("object size %d, header says %d", len(d), size)
		}
		out = append(out, object{typ, d})
	}
	if r.Len() != 0 {
		return nil, fmt.Errorf("%d bytes after the last object", r.Len())
	}
	return out, nil
}

package spec

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/homelab-dev/homelab/internal/units"
)

// Size is a quantity of bytes written with a binary unit: 512MiB, 16GiB, 1TiB.
type Size uint64

// Binary units.
const (
	KiB Size = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
)

var sizeUnits = []struct {
	suffix string
	mult   Size
}{{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}, {"B", 1}}

// ParseSize reads "16GiB", "512MiB", "1TiB" or a plain number of bytes.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	for _, u := range sizeUnits {
		if num, ok := strings.CutSuffix(t, u.suffix); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(num), 10, 64)
			if err != nil || n > uint64(^Size(0)/u.mult) {
				return 0, fmt.Errorf("invalid size %q: want a whole number and a unit, for example 2GiB", s)
			}
			return Size(n) * u.mult, nil
		}
	}
	if strings.HasSuffix(t, "G") || strings.HasSuffix(t, "M") || strings.HasSuffix(t, "GB") || strings.HasSuffix(t, "MB") {
		return 0, fmt.Errorf("invalid size %q: use binary units (MiB, GiB, TiB), for example 2GiB", s)
	}
	n, err := strconv.ParseUint(t, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: want a number and a unit, for example 2GiB", s)
	}
	return Size(n), nil
}

// String writes the size with the largest unit that divides it exactly.
func (s Size) String() string {
	for _, u := range sizeUnits {
		if s >= u.mult && s%u.mult == 0 {
			return strconv.FormatUint(uint64(s/u.mult), 10) + u.suffix
		}
	}
	return strconv.FormatUint(uint64(s), 10) + "B"
}

// MiB returns the size in whole mebibytes, rounded up.
func (s Size) MiB() uint64 { return (uint64(s) + uint64(MiB) - 1) / uint64(MiB) }

// GiB returns the size in whole gibibytes, rounded up.
func (s Size) GiB() uint64 { return (uint64(s) + uint64(GiB) - 1) / uint64(GiB) }

// MarshalText implements encoding.TextMarshaler.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Duration is a time.Duration written as "2s", "500ms" or "1m30s".
type Duration = units.Duration

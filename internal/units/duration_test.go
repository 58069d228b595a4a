package units

import (
	"testing"
	"time"
)

func TestDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{"2s", 2 * time.Second, ""},
		{"1m30s", 90 * time.Second, ""},
		{"500ms", 500 * time.Millisecond, ""},
		{"2", 0, `invalid duration "2": want a number and a unit, for example 2s or 500ms`},
		{"-1s", 0, `invalid duration "-1s": must not be negative`},
	}
	for _, tt := range tests {
		var d Duration
		err := d.UnmarshalText([]byte(tt.in))
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("UnmarshalText(%q) error = %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil || d.D() != tt.want {
			t.Errorf("UnmarshalText(%q) = %v, %v, want %v", tt.in, d.D(), err, tt.want)
		}
		if b, _ := d.MarshalText(); string(b) != tt.want.String() {
			t.Errorf("MarshalText(%v) = %q, want %q", tt.want, b, tt.want.String())
		}
	}
}

package spec

import (
	"testing"
	"time"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    Size
		wantErr bool
	}{
		{"512MiB", 512 * MiB, false},
		{"16GiB", 16 * GiB, false},
		{"1TiB", TiB, false},
		{"4 GiB", 4 * GiB, false},
		{"1024", 1024, false},
		{"10B", 10, false},
		{"0", 0, false},
		{"2KiB", 2 * KiB, false},
		{"4GB", 0, true},
		{"4G", 0, true},
		{"512MB", 0, true},
		{"lots", 0, true},
		{"1.5GiB", 0, true},
		{"-1GiB", 0, true},
		{"", 0, true},
		{"99999999999TiB", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestSizeString(t *testing.T) {
	tests := []struct {
		in   Size
		want string
	}{
		{0, "0B"},
		{1, "1B"},
		{KiB, "1KiB"},
		{1536 * MiB, "1536MiB"},
		{2 * GiB, "2GiB"},
		{3 * TiB, "3TiB"},
		{GiB + 1, "1073741825B"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("Size(%d).String() = %q, want %q", uint64(tt.in), got, tt.want)
		}
		back, err := ParseSize(tt.in.String())
		if err != nil || back != tt.in {
			t.Errorf("ParseSize(%q) = %v, %v; want the round trip to give %d", tt.in.String(), back, err, uint64(tt.in))
		}
	}
}

func TestSizeRounding(t *testing.T) {
	if got := (GiB + 1).GiB(); got != 2 {
		t.Errorf("(1GiB+1).GiB() = %d, want 2", got)
	}
	if got := (512 * MiB).MiB(); got != 512 {
		t.Errorf("512MiB.MiB() = %d, want 512", got)
	}
}

func TestHuman(t *testing.T) {
	tests := []struct {
		in   Size
		want string
	}{
		{12*GiB + 512*MiB, "12.5GiB"},
		{256 * MiB, "256MiB"},
		{16 * GiB, "16GiB"},
		{TiB + TiB/2, "1.5TiB"},
	}
	for _, tt := range tests {
		if got := human(tt.in); got != tt.want {
			t.Errorf("human(%d) = %q, want %q", uint64(tt.in), got, tt.want)
		}
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"2s", 2 * time.Second, false},
		{"500ms", 500 * time.Millisecond, false},
		{"1m30s", 90 * time.Second, false},
		{"fast", 0, true},
		{"-1s", 0, true},
		{"5", 0, true},
	}
	for _, tt := range tests {
		var d Duration
		err := d.UnmarshalText([]byte(tt.in))
		if (err != nil) != tt.wantErr || d.D() != tt.want {
			t.Errorf("Duration.UnmarshalText(%q) = %v, %v; want %v, error %v", tt.in, d, err, tt.want, tt.wantErr)
		}
	}
}

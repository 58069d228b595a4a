package local

import (
	"os"
	"path/filepath"
	"testing"
)

func TestPortsIn(t *testing.T) {
	dir := t.TempDir()
	tcp := filepath.Join(dir, "tcp")
	tcp6 := filepath.Join(dir, "tcp6")
	// 0x1F90 = 8080 listening, 0x0050 = 80 established, 0x01BB = 443 listening on [::].
	os.WriteFile(tcp, []byte(`  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0A0A0214:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0A0A0214:0050 0A0A0201:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 20 4 30 10 -1
`), 0o600)
	os.WriteFile(tcp6, []byte(`  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 100 0 0 10 0
`), 0o600)
	for _, tc := range []struct {
		want []uint16
		ok   bool
	}{
		{nil, true},
		{[]uint16{8080}, true},
		{[]uint16{8080, 443}, true},
		{[]uint16{80}, false}, // established, not listening
		{[]uint16{8080, 9}, false},
	} {
		if got := portsIn(tc.want, "0A", tcp, tcp6, filepath.Join(dir, "missing")); got != tc.ok {
			t.Errorf("portsIn(%v) = %v, want %v", tc.want, got, tc.ok)
		}
	}
}

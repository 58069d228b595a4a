package lb

import (
	"bufio"
	"fmt"
	"net"
	"testing"
	"time"
)

// A message that arrives in two parts a few microseconds apart must not
// stall: after a short read the direction writes the first part out and
// must still see the second. (RawConn.Read resets the poller's readiness
// on entry, so a direction that left it and skipped its next read slept
// on the second part until a deadline; with noPark, the idle timeout.)
func TestSplitMessageNotDelayed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for i := 0; ; i++ {
					if _, err := r.ReadString('\n'); err != nil {
						return
					}
					// The reply in two writes, the second after a gap
					// of 0 to 40 microseconds.
					c.Write([]byte("part one, "))
					time.Sleep(time.Duration(i%5) * 10 * time.Microsecond)
					c.Write([]byte("part two\n"))
				}
			}()
		}
	}()
	s := startLB(t, fmt.Sprintf(`
timeouts: {idle: 1m}
tuning: {noPark: true}
frontends:
  - name: web
    listen: ["127.0.0.1:0"]
    backend: app
backends:
  - name: app
    servers: [{address: %s}]
`, ln.Addr()))
	for range 4 {
		c, err := net.Dial("tcp", addr(t, s, "web"))
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(c)
		for i := range 150 {
			start := time.Now()
			c.SetDeadline(start.Add(2 * time.Second))
			if _, err := c.Write([]byte("ask\n")); err != nil {
				t.Fatal(err)
			}
			line, err := r.ReadString('\n')
			if err != nil || line != "part one, part two\n" {
				t.Fatalf("round trip %d: %q, %v (after %v)", i, line, err, time.Since(start))
			}
		}
		c.Close()
	}
}

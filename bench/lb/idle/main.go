// Command idle opens N connections to an address (a proxy in front of the
// benchmark backend), sends one HTTP request on each and reads the answer,
// so every connection is established end to end, then holds them all idle
// until it gets SIGTERM or SIGINT. It prints "ready N" once all are held.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.3:18080", "address to connect to")
	n := flag.Int("n", 10000, "connections to hold")
	par := flag.Int("parallel", 64, "connections opened at once")
	flag.Parse()

	conns := make([]net.Conn, *n)
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed int
		first  error
	)
	sem := make(chan struct{}, *par)
	req := []byte("GET /idle HTTP/1.1\r\nHost: bench\r\n\r\n")
	for i := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func(i int) {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := open(*addr, req)
			if err != nil {
				mu.Lock()
				failed++
				if first == nil {
					first = err
				}
				mu.Unlock()
				return
			}
			conns[i] = c
		}(i)
	}
	wg.Wait()
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "idle: %d of %d connections failed, first: %v\n", failed, *n, first)
	}
	fmt.Printf("ready %d\n", *n-failed)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

func open(addr string, req []byte) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Write(req); err != nil {
		c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(c, 512), nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	resp.Body.Close()
	c.SetDeadline(time.Time{})
	return c, nil
}

// Command lbmem runs the load balancer (lb.Balancer, the code homelab-lb
// runs) and, on SIGUSR1, prints the Go runtime's view of its memory to
// stdout: goroutines, stack and heap bytes. The benchmark's notes use it to
// split the RSS an idle connection costs into stacks and heap objects.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"

	"github.com/homelab-dev/homelab/internal/lb"
)

func main() {
	path := flag.String("config", "", "load balancer config file")
	heap := flag.String("heapprofile", "", "also write a heap profile (pprof) to this file on SIGUSR1")
	flag.Parse()
	cfg, err := lb.LoadFile(*path)
	if err != nil {
		log.Fatalf("lbmem: loading %s: %v", *path, err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	go func() {
		for range usr1 {
			runtime.GC()
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			fmt.Printf("goroutines %d stack_inuse %d heap_inuse %d heap_alloc %d heap_objects %d sys %d\n",
				runtime.NumGoroutine(), m.StackInuse, m.HeapInuse, m.HeapAlloc, m.HeapObjects, m.Sys)
			if *heap != "" {
				if f, err := os.Create(*heap); err == nil {
					pprof.WriteHeapProfile(f)
					f.Close()
				}
			}
		}
	}()
	b := &lb.Balancer{Config: cfg}
	if err := b.Run(ctx); err != nil {
		log.Fatalf("lbmem: %v", err)
	}
}

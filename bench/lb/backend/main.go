// Command backend is the small HTTP server behind the proxies in the load
// balancer benchmark (bench/lb/run.sh): every path answers 200 with a short
// body, keep-alive connections are held until the client closes them.
package main

import (
	"flag"
	"log"
	"net"
	"net/http"
	"strconv"
)

func main() {
	listen := flag.String("listen", "127.0.0.2:18081", "address to serve on")
	flag.Parse()
	body := []byte("ok from " + *listen + "\n")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("backend: listening on %s: %v", *listen, err)
	}
	// No timeouts: the idle phase holds connections open on purpose.
	srv := &http.Server{Handler: h}
	log.Fatal(srv.Serve(ln))
}

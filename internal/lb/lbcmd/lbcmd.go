// Package lbcmd runs the load balancer from a config file: the shared body
// of the standalone homelab-lb binary and of `homelab lb`. It wires
// signals (SIGHUP reloads), the file watcher and logging around lb.Balancer.
package lbcmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/homelab-dev/homelab/internal/lb"
)

// Options configure Serve.
type Options struct {
	ConfigPath string
	// LogLevel is debug, info (default), warn or error.
	LogLevel string
	// LogFormat is text (default) or json.
	LogFormat string
	// Watch is how often the config file is checked for changes (default
	// 2s; negative: only SIGHUP reloads).
	Watch time.Duration
	// Grace is how long open connections may finish after SIGINT or
	// SIGTERM (listeners close at once); 0 closes them at once.
	Grace  time.Duration
	Stderr io.Writer
	// Started, if set, is called once the balancer listens (for tests).
	Started func(*lb.Balancer)
}

// NewLogger returns a slog logger writing to w.
func NewLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(orDefault(level, "info")))); err != nil {
		return nil, fmt.Errorf("unknown log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch orDefault(format, "text") {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("unknown log format %q: want text or json", format)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// Check loads and validates a config file; the error lists every problem.
func Check(path string) (*lb.Config, error) {
	return lb.LoadFile(path)
}

// Serve runs the balancer until ctx is done. SIGHUP and changes to the
// file reload it; a bad new config is logged and the running one stays.
func Serve(ctx context.Context, o Options) error {
	if o.Stderr == nil {
		o.Stderr = os.Stderr
	}
	log, err := NewLogger(o.Stderr, o.LogLevel, o.LogFormat)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(o.ConfigPath)
	if err != nil {
		return fmt.Errorf("reading load balancer config: %w", err)
	}
	cfg, err := lb.Parse(data)
	if err != nil {
		return fmt.Errorf("loading %s:\n%w", o.ConfigPath, err)
	}
	// Catch SIGHUP before anything can send it expecting a reload.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	b := &lb.Balancer{Config: cfg, Logger: log}
	if err := b.Start(); err != nil {
		return err
	}
	if o.Started != nil {
		o.Started(b)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r := &lb.FileReloader{Path: o.ConfigPath, Balancer: b, Trigger: hup, Interval: o.Watch, Logger: log, Current: data}
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.Run(wctx)
	}()
	<-ctx.Done()
	cancel()
	<-done
	if o.Grace <= 0 {
		return b.Close()
	}
	sctx, scancel := context.WithTimeout(context.Background(), o.Grace)
	defer scancel()
	return b.Shutdown(sctx)
}

const usage = `usage:
  homelab-lb run --config FILE [--log-level info] [--log-format text|json] [--watch 2s] [--grace 5s]
  homelab-lb check --config FILE

run serves until SIGINT or SIGTERM (then stops accepting and lets open
connections finish for --grace); SIGHUP or a change to FILE reloads it.
check validates FILE and prints every problem with its line and column.
`

// Main is the standalone binary's command line; it returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stderr, usage)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	fs := flag.NewFlagSet("homelab-lb "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o Options
	fs.StringVar(&o.ConfigPath, "config", "/etc/homelab-lb/lb.yaml", "load balancer config file")
	if args[0] == "run" {
		fs.StringVar(&o.LogLevel, "log-level", "info", "debug, info, warn or error")
		fs.StringVar(&o.LogFormat, "log-format", "text", "text or json")
		fs.DurationVar(&o.Watch, "watch", 2*time.Second, "how often to check the config file for changes (negative: SIGHUP only)")
		fs.DurationVar(&o.Grace, "grace", 5*time.Second, "on SIGTERM, how long open connections may finish")
	}
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	switch args[0] {
	case "check":
		if _, err := Check(o.ConfigPath); err != nil {
			fmt.Fprintf(stderr, "homelab-lb: %v\n", err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: ok\n", o.ConfigPath)
		return 0
	case "run":
		o.Stderr = stderr
		if err := Serve(ctx, o); err != nil {
			fmt.Fprintf(stderr, "homelab-lb: %v\n", err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "homelab-lb: unknown command %q\n%s", args[0], usage)
	return 2
}

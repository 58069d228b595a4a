package lb

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"time"
)

// FileReloader reloads a Balancer from its config file when the file's
// contents change (polled, so editors' rename-over and symlink swaps are
// seen too) or when a signal arrives on Trigger (the command wires
// SIGHUP to it). An invalid new file is logged and the running config
// stays.
type FileReloader struct {
	Path     string
	Balancer *Balancer
	// Trigger forces a reload, whether the file changed or not.
	Trigger <-chan os.Signal
	// Interval between checks of the file (default 2s; negative: never,
	// reload on Trigger only).
	Interval time.Duration
	Logger   *slog.Logger
	// Current is the file content the Balancer runs now; nil means read
	// the file when Run starts (a change made before that is missed).
	Current []byte
	// OnReload, if set, is called after each attempt (for tests).
	OnReload func(error)
}

// Run watches until ctx is done. It assumes the Balancer runs the config
// the file holds now.
func (r *FileReloader) Run(ctx context.Context) error {
	log := r.Logger
	if log == nil {
		log = slog.Default()
	}
	interval := r.Interval
	if interval == 0 {
		interval = 2 * time.Second
	}
	last := r.Current
	if last == nil {
		last, _ = os.ReadFile(r.Path)
	}
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	reload := func(why string) {
		cfg, err := LoadFile(r.Path)
		if err == nil {
			err = r.Balancer.Reload(cfg)
		}
		if err != nil {
			log.Error("config reload rejected; the running config stays", "path", r.Path, "trigger", why, "err", err)
		} else {
			log.Debug("config file applied", "path", r.Path, "trigger", why)
		}
		if r.OnReload != nil {
			r.OnReload(err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-r.Trigger:
			if !ok {
				r.Trigger = nil
				continue
			}
			last, _ = os.ReadFile(r.Path)
			reload("signal")
		case <-tick:
			data, err := os.ReadFile(r.Path)
			if err != nil || bytes.Equal(data, last) {
				continue
			}
			last = data
			reload("file change")
		}
	}
}

package lb

import (
	"net/netip"
	"sync"
	"time"
)

// capLimiter is the global connection cap. At the cap, accept loops wait
// instead of accepting, so new clients queue in the kernel's backlog (and
// are served as slots free up) rather than being refused.
type capLimiter struct {
	mu     sync.Mutex
	n, max int
	wake   chan struct{} // closed when a slot frees up
}

// wait blocks until a slot may be free or done is closed; it reports
// whether the caller had to wait.
func (c *capLimiter) wait(done <-chan struct{}) (waited bool) {
	for {
		c.mu.Lock()
		if c.max <= 0 || c.n < c.max {
			c.mu.Unlock()
			return waited
		}
		if c.wake == nil {
			c.wake = make(chan struct{})
		}
		w := c.wake
		c.mu.Unlock()
		waited = true
		select {
		case <-w:
		case <-done:
			return waited
		}
	}
}

func (c *capLimiter) acquire() {
	c.mu.Lock()
	c.n++
	c.mu.Unlock()
}

func (c *capLimiter) release() {
	c.mu.Lock()
	c.n--
	if c.wake != nil && (c.max <= 0 || c.n < c.max) {
		close(c.wake)
		c.wake = nil
	}
	c.mu.Unlock()
}

func (c *capLimiter) setMax(max int) {
	c.mu.Lock()
	c.max = max
	if c.wake != nil && (max <= 0 || c.n < max) {
		close(c.wake)
		c.wake = nil
	}
	c.mu.Unlock()
}

func (c *capLimiter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

// sourceLimiter enforces the per-source concurrent connection limit and
// the per-source new connection rate (a token bucket per address).
type sourceLimiter struct {
	mu      sync.Mutex
	sources map[netip.Addr]*source
	sweep   time.Time
}

type source struct {
	active int
	tokens float64
	last   time.Time
}

type limitVerdict int

const (
	admitted limitVerdict = iota
	overConnections
	overRate
)

// acquire admits a new connection from a, or says which limit it exceeds.
// An admitted connection must be released.
func (l *sourceLimiter) acquire(a netip.Addr, lim *Limits, now time.Time) limitVerdict {
	if lim.PerSourceConnections <= 0 && lim.PerSourceRate <= 0 {
		return admitted
	}
	a = a.Unmap()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.sources == nil {
		l.sources = map[netip.Addr]*source{}
	}
	if now.Sub(l.sweep) > 10*time.Second {
		l.sweepLocked(lim, now)
	}
	s := l.sources[a]
	if s == nil {
		s = &source{tokens: float64(lim.PerSourceBurst), last: now}
		l.sources[a] = s
	}
	if lim.PerSourceConnections > 0 && s.active >= lim.PerSourceConnections {
		return overConnections
	}
	if lim.PerSourceRate > 0 {
		s.tokens = min(float64(max(1, lim.PerSourceBurst)), s.tokens+now.Sub(s.last).Seconds()*lim.PerSourceRate)
		s.last = now
		if s.tokens < 1 {
			return overRate
		}
		s.tokens--
	}
	s.active++
	return admitted
}

func (l *sourceLimiter) release(a netip.Addr) {
	a = a.Unmap()
	l.mu.Lock()
	if s := l.sources[a]; s != nil && s.active > 0 {
		s.active--
	}
	l.mu.Unlock()
}

// sweepLocked forgets sources with no connection whose bucket is full again.
func (l *sourceLimiter) sweepLocked(lim *Limits, now time.Time) {
	l.sweep = now
	for a, s := range l.sources {
		if s.active > 0 {
			continue
		}
		if lim.PerSourceRate <= 0 || now.Sub(s.last).Seconds()*lim.PerSourceRate >= float64(lim.PerSourceBurst) {
			delete(l.sources, a)
		}
	}
}

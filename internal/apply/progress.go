package apply

import (
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/homelab-dev/homelab/internal/plan"
)

// Lines reports progress as one line per event, for logs and pipes.
type Lines struct {
	W     io.Writer
	Total int

	mu   sync.Mutex
	done int
	last map[string]string
}

// Start implements Progress; Lines reports steps when they end, so that
// logs hold one line per step.
func (l *Lines) Start(plan.Step) {}

// Update implements Progress; it prints a message once when it changes.
func (l *Lines) Update(id string, _ float64, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.last == nil {
		l.last = map[string]string{}
	}
	if msg == "" || l.last[id] == msg {
		return
	}
	l.last[id] = msg
	fmt.Fprintf(l.W, "      %s: %s\n", id, msg)
}

// Done implements Progress.
func (l *Lines) Done(s plan.Step, err error, took time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.done++
	if err != nil {
		fmt.Fprintf(l.W, "  [%d/%d] FAILED %s %s after %s: %v\n", l.done, l.Total, s.Action, s.ID, took.Round(time.Millisecond), err)
		return
	}
	fmt.Fprintf(l.W, "  [%d/%d] %s %s (%s)\n", l.done, l.Total, s.Action, s.ID, took.Round(time.Millisecond))
}

// Bars shows one progress bar per running step on a terminal.
type Bars struct {
	p    *mpb.Progress
	mu   sync.Mutex
	bars map[string]*mpb.Bar
	msgs map[string]string
}

// NewBars starts a bar display writing to w (a terminal).
func NewBars(w io.Writer) *Bars {
	return &Bars{
		p:    mpb.New(mpb.WithOutput(w), mpb.WithRefreshRate(120*time.Millisecond)),
		bars: map[string]*mpb.Bar{},
		msgs: map[string]string{},
	}
}

const barTotal = 1000

// Start implements Progress.
func (b *Bars) Start(s plan.Step) {
	b.mu.Lock()
	defer b.mu.Unlock()
	id := s.ID
	label := fmt.Sprintf("%-7s %s", s.Action, s.ID)
	bar := b.p.New(barTotal, mpb.BarStyle().Lbound("[").Rbound("]"),
		mpb.PrependDecorators(decor.Name(label, decor.WC{W: len(label) + 1, C: decor.DindentRight})),
		mpb.AppendDecorators(
			decor.Elapsed(decor.ET_STYLE_GO),
			decor.Any(func(decor.Statistics) string {
				b.mu.Lock()
				defer b.mu.Unlock()
				if m := b.msgs[id]; m != "" {
					return " " + m
				}
				return ""
			}),
		),
		mpb.BarRemoveOnComplete(),
	)
	b.bars[id] = bar
}

// Update implements Progress.
func (b *Bars) Update(id string, fraction float64, msg string) {
	b.mu.Lock()
	bar := b.bars[id]
	if msg != "" {
		b.msgs[id] = msg
	}
	b.mu.Unlock()
	if bar != nil && fraction > 0 {
		bar.SetCurrent(int64(fraction * barTotal))
	}
}

// Done implements Progress; finished steps leave one line behind.
func (b *Bars) Done(s plan.Step, err error, took time.Duration) {
	b.mu.Lock()
	bar := b.bars[s.ID]
	delete(b.bars, s.ID)
	b.mu.Unlock()
	if bar == nil {
		return
	}
	status := "done"
	if err != nil {
		status = "FAILED: " + err.Error()
	}
	line := fmt.Sprintf("  %s %s %s (%s)\n", s.Action, s.ID, status, took.Round(time.Millisecond))
	b.p.Write([]byte(line)) //nolint:errcheck // progress output only
	if err != nil {
		bar.Abort(true)
		return
	}
	bar.SetCurrent(barTotal)
}

// Wait flushes the display; call it after Run returns.
func (b *Bars) Wait() { b.p.Wait() }

package lb

import (
	"errors"
	"runtime/debug"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// releaseBurst is how many newly parked directions trigger giving freed
// memory back to the system.
const releaseBurst = 1024

// errParked ends a pump whose direction was handed to the parker.
var errParked = errors.New("parked")

// parker watches the sockets of idle connection directions in one epoll
// set, so an idle connection holds no goroutine: when a parked socket
// becomes readable (or hangs up), a fresh goroutine resumes its
// direction. It also enforces the idle timeout of parked directions.
//
// Sockets are registered level-triggered and one-shot, from inside
// RawConn.Control (so the descriptor cannot be closed and reused
// meanwhile): data that arrived just before parking is reported at once.
type parker struct {
	s *Balancer
	// release returns freed memory to the system after a burst of
	// directions parks (tuning.noMemoryRelease turns it off).
	release bool

	mu     sync.Mutex
	epfd   int
	wake   int // eventfd that interrupts epoll_wait for shutdown
	next   int32
	parked map[int32]*parkedDir
	closed bool
	done   chan struct{}
}

type parkedDir struct {
	pc        *proxyConn
	toBackend bool
}

func dirBit(toBackend bool) int32 {
	if toBackend {
		return 2
	}
	return 1
}

// start creates the epoll set and its goroutine, once.
func (p *parker) startLocked() error {
	if p.parked != nil {
		return nil
	}
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: -1}); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return err
	}
	p.epfd, p.wake = epfd, wake
	p.parked = map[int32]*parkedDir{}
	p.done = make(chan struct{})
	go p.loop()
	return nil
}

// park hands pc's direction reading src to the parker; false means it
// could not (the caller keeps waiting on its goroutine).
func (p *parker) park(pc *proxyConn, src syscall.RawConn, toBackend bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.startLocked() != nil {
		return false
	}
	p.next++
	if p.next <= 0 {
		p.next = 1
	}
	id := p.next
	// Set the bit before registering: a concurrent closeBoth then sees it
	// and kicks (waiting for p.mu), so the direction cannot be orphaned.
	pc.parkedMask.Or(dirBit(toBackend))
	var cerr error
	err := src.Control(func(fd uintptr) {
		cerr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &unix.EpollEvent{
			Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: id})
	})
	if err != nil || cerr != nil {
		pc.parkedMask.And(^dirBit(toBackend))
		return false
	}
	p.parked[id] = &parkedDir{pc: pc, toBackend: toBackend}
	pc.parkedIDs[dirIndex(toBackend)] = id
	return true
}

func dirIndex(toBackend bool) int {
	if toBackend {
		return 1
	}
	return 0
}

// removeLocked forgets a parked direction.
func (p *parker) removeLocked(id int32, d *parkedDir) {
	delete(p.parked, id)
	d.pc.parkedIDs[dirIndex(d.toBackend)] = 0
	d.pc.parkedMask.And(^dirBit(d.toBackend))
}

// unregister removes a resumed direction's socket from the epoll set.
func (p *parker) unregister(src syscall.RawConn) error {
	var cerr error
	err := src.Control(func(fd uintptr) {
		cerr = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
	if err != nil {
		return err
	}
	if cerr == unix.ENOENT {
		cerr = nil
	}
	return cerr
}

// resumeLocked restarts a parked direction on a fresh goroutine.
func (p *parker) resumeLocked(id int32, d *parkedDir) {
	p.removeLocked(id, d)
	p.s.wg.Add(1)
	go d.pc.direction(d.toBackend, true)
}

// kick ends the parked directions of a connection being closed: a closed
// socket leaves the epoll set, so no event would ever resume them.
func (p *parker) kick(pc *proxyConn) {
	p.mu.Lock()
	var ended []*parkedDir
	for _, id := range pc.parkedIDs {
		if d, ok := p.parked[id]; ok && id != 0 {
			p.removeLocked(id, d)
			ended = append(ended, d)
		}
	}
	p.mu.Unlock()
	for _, d := range ended {
		pc.finish(errParkedClosed, d.toBackend)
	}
}

var errParkedClosed = errors.New("closed while parked")

func (p *parker) loop() {
	events := make([]unix.EpollEvent, 256)
	lastScan := time.Now()
	var lastRelease time.Time
	releasedAt := 0 // parked directions at the last release
	for {
		n, err := unix.EpollWait(p.epfd, events, 250)
		if err != nil && err != unix.EINTR {
			p.s.logger().Error("parker: epoll_wait failed", "err", err)
			time.Sleep(100 * time.Millisecond)
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			close(p.done)
			return
		}
		for i := range max(n, 0) {
			id := events[i].Fd
			if d, ok := p.parked[id]; ok {
				p.resumeLocked(id, d)
			}
		}
		var expired []*parkedDir
		if now := time.Now(); now.Sub(lastScan) >= time.Second {
			lastScan = now
			for id, d := range p.parked {
				if now.Sub(time.Unix(0, d.pc.lastActive.Load())) >= d.pc.idle {
					p.removeLocked(id, d)
					expired = append(expired, d)
				}
			}
		}
		// Many directions just parked (a burst of connections went idle):
		// their goroutine stacks are free now; give the memory back to
		// the system rather than keep it for a burst that may not come.
		parked := len(p.parked)
		if parked < releasedAt {
			releasedAt = parked
		}
		release := p.release && parked-releasedAt >= releaseBurst && time.Since(lastRelease) >= time.Second
		if release {
			releasedAt, lastRelease = parked, time.Now()
		}
		p.mu.Unlock()
		if release {
			debug.FreeOSMemory()
		}
		for _, d := range expired {
			// Idle timeout: close the connection, which ends this direction.
			d.pc.finish(errDeadline, d.toBackend)
		}
	}
}

// close stops the loop; parked directions are ended by their connections
// being closed (Balancer.Close closes every connection first).
func (p *parker) close() {
	p.mu.Lock()
	if p.closed || p.parked == nil {
		p.closed = true
		p.mu.Unlock()
		return
	}
	p.closed = true
	var one [8]byte
	one[0] = 1
	unix.Write(p.wake, one[:])
	p.mu.Unlock()
	<-p.done
	unix.Close(p.epfd)
	unix.Close(p.wake)
}

// count reports how many directions are parked.
func (p *parker) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.parked)
}

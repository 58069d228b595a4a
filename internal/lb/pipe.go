package lb

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// pipe is a kernel pipe used to splice bytes from one socket to another
// without copying them through user space.
type pipe struct {
	r, w int
	n    int // bytes inside
	cap  int // bytes it holds
}

// pipePool hands out pipes only while data flows: an idle connection holds
// none. Spare pipes are kept up to a bound; pipes with data left inside
// (after an error) are closed, never reused.
type pipePool struct {
	mu   sync.Mutex
	free []*pipe
	max  int
	size int

	open  atomic.Int64 // pipes that exist
	inUse atomic.Int64
}

func (p *pipePool) get() (*pipe, error) {
	p.mu.Lock()
	if n := len(p.free); n > 0 {
		pp := p.free[n-1]
		p.free = p.free[:n-1]
		p.mu.Unlock()
		p.inUse.Add(1)
		return pp, nil
	}
	size := p.size
	p.mu.Unlock()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return nil, err
	}
	pc := 64 << 10
	if size > 0 {
		// Best effort: the kernel caps it at fs.pipe-max-size.
		if got, err := unix.FcntlInt(uintptr(fds[1]), unix.F_SETPIPE_SZ, size); err == nil {
			pc = got
		}
	}
	p.open.Add(1)
	p.inUse.Add(1)
	return &pipe{r: fds[0], w: fds[1], cap: pc}, nil
}

func (p *pipePool) put(pp *pipe) {
	p.inUse.Add(-1)
	p.mu.Lock()
	if pp.n == 0 && len(p.free) < p.max {
		p.free = append(p.free, pp)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	p.closePipe(pp)
}

func (p *pipePool) closePipe(pp *pipe) {
	unix.Close(pp.r)
	unix.Close(pp.w)
	p.open.Add(-1)
}

// resize applies new bounds; spare pipes beyond them are closed.
func (p *pipePool) resize(max, size int) {
	p.mu.Lock()
	var drop []*pipe
	if size != p.size {
		drop, p.free = p.free, nil
	} else if len(p.free) > max {
		drop = append(drop, p.free[max:]...)
		p.free = p.free[:max]
	}
	p.max, p.size = max, size
	p.mu.Unlock()
	for _, pp := range drop {
		p.closePipe(pp)
	}
}

func (p *pipePool) closeAll() {
	p.resize(0, p.size)
}

// bufPool holds copy buffers. A wake-up's first read goes to a buffer:
// small messages (requests, responses, keep-alives) are copied, which
// costs no more syscalls than splice and tells when the socket is drained.
// A read that fills the buffer means bulk: the rest of that burst is
// spliced, and so is the next burst of a stream that moved that much.
// Like pipes, buffers are held only while data is in hand.
var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

const copyBufSize = 16 << 10

const spliceFlags = unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK

// pump moves bytes from src to dst until src reaches EOF (nil error) or
// something fails. It waits for readability holding no pipe or buffer.
func (pc *proxyConn) pump(src, dst syscall.RawConn, srcConn, dstConn deadliner, toBackend bool) error {
	pm := &pumper{pc: pc, toBackend: toBackend, src: src, dst: dst, srcConn: srcConn, dstConn: dstConn,
		pool: &pc.srv.pipes, canSplice: !pc.noSplice}
	if toBackend {
		pm.rp = pc.rp
	}
	// The callbacks handed to RawConn are made once per pump: with the
	// state in one struct, a pump costs four allocations, not one per
	// variable its closures would capture.
	pm.readCB, pm.writeCB, pm.inlineCB = pm.readFn, pm.writeFn, pm.inlineWrite
	defer pm.releasePipe()
	defer pm.releaseBuf()
	return pm.run()
}

// pumper is one direction's state while it pumps.
type pumper struct {
	pc               *proxyConn
	toBackend        bool
	src, dst         syscall.RawConn
	srcConn, dstConn deadliner
	pool             *pipePool
	rp               *replay // toward the server with replayOnReset only
	gen              int32   // rp.gen when dst was taken
	readCB, writeCB  func(uintptr) bool
	inlineCB         func(uintptr) bool
	p                *pipe
	buf              *[]byte
	n, off           int
	err              error
	eof              bool
	canSplice        bool
	splicing         bool // this burst goes through the pipe
	inPipe           bool // the data in hand is in the pipe, not in buf
	inline           bool // readFn wrote a short read out itself
	blocked          bool // that write could not finish without waiting
	wdSet            bool // dst's write deadline was set by this pump
	burst            int  // bytes read since the last wait
}

func (pm *pumper) releasePipe() {
	if pm.p != nil {
		pm.pool.put(pm.p)
		pm.p = nil
	}
}

func (pm *pumper) releaseBuf() {
	if pm.buf != nil {
		bufPool.Put(pm.buf)
		pm.buf = nil
	}
}

// inlineWrite writes what a short read got without leaving src.Read: the
// socket is drained, so the direction can wait for more right after,
// without the read that would say EAGAIN. (Leaving src.Read and calling
// it again would not do: RawConn forgets a readiness the poller reported
// in between, and the direction would sleep on data.)
func (pm *pumper) inlineWrite(fd uintptr) bool {
	if !pm.writeFn(fd) {
		pm.blocked = true
	}
	return true // never wait here, holding src's read lock
}

func (pm *pumper) takeBackend(b *sock) { pm.dst, pm.dstConn = b.rc, b }

// preWrite, toward a server whose backend has replayOnReset, takes the
// current server socket (a replay may have swapped it) and, while the
// replay window is open, writes through replaySend, which keeps a copy.
// It reports whether everything in hand is written (or err set).
func (pm *pumper) preWrite() bool {
	rp := pm.rp
	if rp == nil {
		return false
	}
	// active first: once it is false no swap follows, so the gen read
	// after it is final. (Read the other way round, a swap and the
	// window's end between the two would leave dst the old socket.)
	active := rp.active.Load()
	if g := rp.gen.Load(); g != pm.gen {
		pm.gen = g
		pm.takeBackend(pm.pc.backendNow())
	}
	if !active {
		return false
	}
	if pm.inPipe {
		rp.stop()
		pm.takeBackend(pm.pc.backendNow())
		return false
	}
	m, to, ok, werr := pm.pc.replaySend((*pm.buf)[pm.off:pm.n])
	pm.takeBackend(to)
	pm.gen = rp.gen.Load()
	if !ok {
		return false
	}
	pm.off += m
	if werr != nil {
		pm.err = werr
		return true
	}
	return pm.off == pm.n
}

func (pm *pumper) readFn(fd uintptr) bool {
	pc := pm.pc
	for {
		if pm.splicing {
			if pm.p == nil {
				var err error
				if pm.p, err = pm.pool.get(); err != nil {
					pm.p, pm.splicing = nil, false // out of fds: copy
					continue
				}
			}
			pm.n, pm.err = rawSplice(int(fd), pm.p.w, pm.p.cap)
			if pm.n > 0 {
				pm.p.n += pm.n
			}
			pm.inPipe = true
		} else {
			if pm.buf == nil {
				pm.buf = bufPool.Get().(*[]byte)
			}
			pm.n, pm.err = rawRead(int(fd), *pm.buf)
			pm.inPipe = false
		}
		if pm.n > 0 && !pm.toBackend && !pc.replied {
			pc.replied = true
			if pc.rp != nil {
				pc.rp.stop()
			}
		}
		switch err := pm.err; {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN:
			// Nothing to read: hold nothing while we wait. A stream that
			// moved a buffer's worth or more is bulk: its next burst
			// starts in the pipe.
			pm.releasePipe()
			pm.releaseBuf()
			pm.splicing = pm.canSplice && pm.burst >= copyBufSize
			pm.burst, pm.err = 0, nil
			return false
		case err == unix.EINVAL && pm.splicing && pm.p.n == 0:
			// This socket pair cannot splice: copy instead.
			pm.canSplice, pm.splicing, pm.err = false, false, nil
			pm.releasePipe()
			continue
		case err == nil && pm.n == 0:
			pm.eof = true
		case err == nil && !pm.inPipe:
			pm.burst += pm.n
			if pm.n == len(*pm.buf) {
				pm.splicing = pm.canSplice // bulk: splice the rest
				break
			}
			// A short read: the socket is drained. Write it out here and
			// wait for more in the same src.Read call.
			pm.off, pm.blocked = 0, false
			if pm.preWrite() {
				if pm.err != nil {
					return true
				}
			} else if werr := pm.dst.Write(pm.inlineCB); werr != nil {
				if errors.Is(werr, errDeadline) {
					pm.blocked = true // the caller's write loop decides
				} else if pm.err == nil {
					pm.err = werr
				}
			}
			if pm.err != nil || pm.blocked {
				pm.inline = pm.blocked && pm.err == nil
				return true // the caller finishes the write or fails
			}
			pm.releaseBuf()
			pm.splicing = pm.canSplice && pm.burst >= copyBufSize
			pm.burst = 0
			return false
		case err == nil:
			pm.burst += pm.n
		}
		return true
	}
}

func (pm *pumper) writeFn(fd uintptr) bool {
	for {
		var m int
		var werr error
		if pm.inPipe {
			m, werr = rawSplice(pm.p.r, int(fd), pm.p.n)
			if m > 0 {
				pm.p.n -= m
			}
		} else {
			m, werr = rawWrite(int(fd), (*pm.buf)[pm.off:pm.n])
			if m > 0 {
				pm.off += m
			}
		}
		if m > 0 {
			pm.pc.account(pm.toBackend, m)
			pm.pc.touch() // progress, even partial, is activity
		}
		switch {
		case werr == unix.EINTR:
			continue
		case werr == unix.EAGAIN:
			// The write deadline is set only when a write first has to
			// wait (most connections never do): until then no timer.
			// Later expiries are pushed out by onDeadline while the
			// connection is active.
			if !pm.wdSet {
				pm.wdSet = true
				pm.dstConn.SetWriteDeadline(time.Now().Add(pm.pc.idle))
			}
			return false
		case werr != nil:
			pm.err = werr
			return true
		}
		if pm.inPipe && pm.p.n > 0 || !pm.inPipe && pm.off < pm.n {
			continue
		}
		return true
	}
}

func (pm *pumper) run() error {
	pc := pm.pc
	for {
		if rerr := pm.src.Read(pm.readCB); rerr != nil {
			if errors.Is(rerr, errDeadline) {
				switch pc.onDeadline(pm.srcConn, true) {
				case keepWaiting:
					continue
				case park:
					if pc.srv.parker.park(pc, pm.src, pm.toBackend) {
						return errParked
					}
					pm.srcConn.SetReadDeadline(time.Now().Add(pc.idle))
					continue
				}
			}
			return rerr
		}
		if !pm.toBackend && !pc.replied && pm.serverReset() {
			// The server reset the connection before sending a byte.
			pc.sv.resetEmpty.Add(1)
			if pc.rp != nil {
				if nb := pc.redispatch(); nb != nil {
					pm.src, pm.srcConn = nb.rc, nb
					pm.releasePipe()
					pm.releaseBuf()
					pm.err, pm.eof, pm.splicing, pm.burst = nil, false, false, 0
					continue
				}
			}
			pm.err = unix.ECONNRESET // also when a write saw it: fail, not half-close
		}
		if pm.err != nil {
			return pm.err
		}
		if pm.eof {
			return nil
		}
		if !pm.inline {
			pm.off = 0
		}
		pm.inline = false
		if pm.preWrite() {
			if pm.err != nil {
				return pm.err
			}
			continue
		}
		for {
			werr := pm.dst.Write(pm.writeCB)
			if werr != nil {
				if errors.Is(werr, errDeadline) && pc.onDeadline(pm.dstConn, false) == keepWaiting {
					continue
				}
				return werr
			}
			break
		}
		if pm.err != nil {
			return pm.err
		}
	}
}

// serverReset tells, on the server-to-client direction, whether the read
// that ended found the server reset: the read's error, or, with
// replayOnReset, an EOF after a write to the server saw the reset (which
// the kernel reports once, to whichever call comes first).
func (pm *pumper) serverReset() bool {
	if pm.err != nil {
		return errors.Is(pm.err, unix.ECONNRESET)
	}
	return pm.eof && pm.pc.rp != nil && pm.pc.rp.sawReset()
}

// The pump's reads, writes and splices are made with RawSyscall, not
// Syscall: every descriptor they touch is non-blocking (sockets from
// accept4 and socket with SOCK_NONBLOCK, pipes from pipe2 with O_NONBLOCK,
// splice with SPLICE_F_NONBLOCK), so each call returns at once, with data or EAGAIN.
// Syscall would enter the scheduler's syscall state around it, and when a
// call is slowed (softirq work on this CPU) sysmon hands the P to another
// thread: a futex wake and a context switch per hand-off, pure overhead
// with GOMAXPROCS=1 on one pinned core. Errors are the same syscall.Errno
// values unix.Read/Write/Splice return; EAGAIN still sends the caller back
// to the poller. Never use these on a descriptor that may block.

func rawRead(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

func rawWrite(fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// rawSplice moves up to n bytes from in to out (no offsets) without
// blocking.
func rawSplice(in, out, n int) (int, error) {
	r, _, e := unix.RawSyscall6(unix.SYS_SPLICE, uintptr(in), 0, uintptr(out), 0, uintptr(n), spliceFlags)
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

var errDeadline = os.ErrDeadlineExceeded

// deadliner is the part of net.Conn the idle timer uses.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

package lb

import (
	"errors"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

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

// bufPool holds copy buffers for the non-splice path; like pipes they are
// taken only while data flows.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

const spliceFlags = unix.SPLICE_F_MOVE | unix.SPLICE_F_NONBLOCK

// errIdle is returned by a pump when the connection saw no traffic for the
// idle timeout.
var errIdle = errors.New("idle timeout")

// pump moves bytes from src to dst until src reaches EOF (nil error) or
// something fails. It waits for readability holding no pipe or buffer.
func (pc *proxyConn) pump(src, dst syscall.RawConn, srcConn, dstConn deadliner, toBackend bool) error {
	var (
		p   *pipe
		buf *[]byte
		n   int
		err error
		eof bool
	)
	pool := &pc.srv.pipes
	useSplice := !pc.noSplice
	defer func() {
		if p != nil {
			pool.put(p)
		}
		if buf != nil {
			bufPool.Put(buf)
		}
	}()
	readFn := func(fd uintptr) bool {
		for {
			if useSplice {
				if p == nil {
					p, err = pool.get()
					if err != nil {
						return true
					}
				}
				var n64 int64
				n64, err = unix.Splice(int(fd), nil, p.w, nil, p.cap, spliceFlags)
				n = int(n64)
				if n > 0 {
					p.n += n
				}
			} else {
				if buf == nil {
					buf = bufPool.Get().(*[]byte)
				}
				n, err = unix.Read(int(fd), *buf)
			}
			switch {
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				// Nothing to read: give the pipe back while we wait.
				if p != nil {
					pool.put(p)
					p = nil
				}
				if buf != nil {
					bufPool.Put(buf)
					buf = nil
				}
				err = nil
				return false
			case err == nil && n == 0:
				eof = true
			}
			return true
		}
	}
	var wn int
	off := 0
	writeFn := func(fd uintptr) bool {
		for {
			var m int
			var werr error
			if useSplice {
				var m64 int64
				m64, werr = unix.Splice(p.r, nil, int(fd), nil, p.n, spliceFlags)
				m = int(m64)
				if m > 0 {
					p.n -= m
				}
			} else {
				m, werr = unix.Write(int(fd), (*buf)[off:wn])
				if m > 0 {
					off += m
				}
			}
			if m > 0 {
				pc.account(toBackend, m)
			}
			switch {
			case werr == unix.EINTR:
				continue
			case werr == unix.EAGAIN:
				return false
			case werr != nil:
				err = werr
				return true
			}
			if useSplice && p.n > 0 || !useSplice && off < wn {
				continue
			}
			return true
		}
	}
	for {
		rerr := src.Read(readFn)
		if rerr != nil {
			if errors.Is(rerr, errDeadline) && pc.stillActive(srcConn, true) {
				continue
			}
			return rerr
		}
		if err != nil {
			if useSplice && err == unix.EINVAL && p != nil && p.n == 0 {
				// This socket pair cannot splice: copy instead.
				useSplice = false
				pool.put(p)
				p = nil
				err = nil
				continue
			}
			return err
		}
		if eof {
			return nil
		}
		wn, off = n, 0
		for {
			werr := dst.Write(writeFn)
			if werr != nil {
				if errors.Is(werr, errDeadline) && pc.stillActive(dstConn, false) {
					continue
				}
				return werr
			}
			break
		}
		if err != nil {
			return err
		}
		pc.touch()
	}
}

var errDeadline = os.ErrDeadlineExceeded

// deadliner is the part of net.Conn the idle timer uses.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

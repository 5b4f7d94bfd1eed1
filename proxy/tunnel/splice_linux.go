package tunnel

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
)

// Go's io.Copy between two *net.TCPConn splices, but it takes a pipe (two
// file descriptors) before it knows there is data, and keeps it while it
// waits: an idle tunnel holds two pipes, six descriptors in all, and 10,000
// idle tunnels exhaust a 20,000-descriptor limit at a third of the way.
// spliceCopy waits for data first, holding nothing, and takes a pipe from a
// pool only to move what has arrived: an idle tunnel holds its two sockets
// and nothing else, and data still never passes through user space.

// pipeSize is the kernel buffer asked for each pipe: bigger pipes move more
// per pair of splice calls. The kernel may grant less (fs.pipe-max-size),
// and counts pipe memory per user (fs.pipe-user-pages-soft, 64 MiB): pipes
// are held only while data moves, and few are kept for reuse.
const pipeSize = 1 << 20

// maxFreePipes bounds the pipes kept open for reuse.
const maxFreePipes = 16

type pipe struct {
	r, w int
	size int
}

var (
	pipesMu sync.Mutex
	pipes   []*pipe
)

func getPipe() (*pipe, error) {
	pipesMu.Lock()
	if n := len(pipes); n > 0 {
		p := pipes[n-1]
		pipes = pipes[:n-1]
		pipesMu.Unlock()
		return p, nil
	}
	pipesMu.Unlock()
	var fds [2]int
	if err := syscall.Pipe2(fds[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return nil, err
	}
	p := &pipe{r: fds[0], w: fds[1], size: 64 << 10}
	if n, _, errno := syscall.Syscall(syscall.SYS_FCNTL, uintptr(p.w), syscall.F_SETPIPE_SZ, pipeSize); errno == 0 {
		p.size = int(n)
	}
	return p, nil
}

// putPipe returns an empty pipe to the pool (or closes it).
func putPipe(p *pipe) {
	pipesMu.Lock()
	if len(pipes) < maxFreePipes {
		pipes = append(pipes, p)
		pipesMu.Unlock()
		return
	}
	pipesMu.Unlock()
	_ = syscall.Close(p.r)
	_ = syscall.Close(p.w)
}

// closePipe discards a pipe that may still hold data.
func closePipe(p *pipe) {
	_ = syscall.Close(p.r)
	_ = syscall.Close(p.w)
}

const spliceFlags = 0x1 | 0x2 // SPLICE_F_MOVE | SPLICE_F_NONBLOCK

var errNotTCP = errors.New("not a TCP connection")

// spliceCopy copies from src to dst until EOF, an error, or limit bytes
// (limit < 0: no limit). It returns the bytes copied. Deadlines on the
// connections apply.
func spliceCopy(dst, src io.ReadWriter, limit int64) (int64, error) {
	s, ok1 := src.(*net.TCPConn)
	d, ok2 := dst.(*net.TCPConn)
	if !ok1 || !ok2 {
		return 0, errNotTCP
	}
	srcRaw, err := s.SyscallConn()
	if err != nil {
		return 0, err
	}
	dstRaw, err := d.SyscallConn()
	if err != nil {
		return 0, err
	}
	var written int64
	var peek [1]byte
	for limit < 0 || written < limit {
		// Wait for data (or EOF) without taking a pipe.
		eof := false
		var werr error
		err := srcRaw.Read(func(fd uintptr) bool {
			n, _, err := syscall.Recvfrom(int(fd), peek[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			switch {
			case err == syscall.EAGAIN:
				return false
			case err == syscall.EINTR:
				return false
			case err != nil:
				werr = err
			case n == 0:
				eof = true
			}
			return true
		})
		if err == nil {
			err = werr
		}
		if err != nil {
			return written, err
		}
		if eof {
			return written, nil
		}
		p, err := getPipe()
		if err != nil {
			return written, err
		}
		max := p.size
		if limit >= 0 && int64(max) > limit-written {
			max = int(limit - written)
		}
		// Move what has arrived into the pipe.
		var inPipe int64
		err = srcRaw.Read(func(fd uintptr) bool {
			for {
				n, err := syscall.Splice(int(fd), nil, p.w, nil, max, spliceFlags)
				if err == syscall.EINTR {
					continue
				}
				if err == syscall.EAGAIN {
					return false
				}
				inPipe, werr = n, err
				return true
			}
		})
		if err == nil {
			err = werr
		}
		if err != nil {
			closePipe(p)
			return written, err
		}
		if inPipe == 0 {
			putPipe(p)
			return written, nil // EOF between the peek and the splice
		}
		// Drain the pipe into dst, waiting for dst to accept.
		left := inPipe
		werr = nil
		err = dstRaw.Write(func(fd uintptr) bool {
			for left > 0 {
				n, err := syscall.Splice(p.r, nil, int(fd), nil, int(left), spliceFlags)
				if err == syscall.EINTR {
					continue
				}
				if err == syscall.EAGAIN {
					return false
				}
				if err != nil {
					werr = err
					return true
				}
				left -= n
				written += n
			}
			return true
		})
		if err == nil {
			err = werr
		}
		if err != nil {
			closePipe(p)
			return written, err
		}
		putPipe(p)
	}
	return written, nil
}

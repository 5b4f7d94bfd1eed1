package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// idleOpenLimit bounds how long opening the idle tunnels may take (the
// issue's goproxy opened 3,381 of 5,000 in this time).
const idleOpenLimit = 60 * time.Second

// idleStall ends the opening early when no tunnel has opened for this long.
const idleStall = 5 * time.Second

// idle is scenario 6: open many tunnels (CONNECT to a sink that echoes one
// byte and then holds the connection), with a few dozen openers in
// parallel, and keep them all open; the proxy's RSS, file descriptors and
// threads before and after, and the kernel's slab memory (sockets, pipes)
// of the whole machine. Direct opens the same connections to the sink
// itself: its slab figure is the client's and sink's sockets alone.
func (b *bench) idle(t *target) ([]measurement, error) {
	n := b.opt.idleTunnels
	pid := t.pid()
	settle := func() {
		// Return this process's garbage (earlier scenarios' buffers) to
		// the OS, so that the machine's memory moves with the tunnels only.
		debug.FreeOSMemory()
		time.Sleep(time.Second)
	}
	settle()
	var mem0 memStatus
	var fd0 int
	if pid != 0 {
		mem0, fd0 = readMem(pid), fdCount(pid)
	}
	slab0 := kernelSlabKiB()

	ctx, cancel := context.WithTimeout(b.ctx, idleOpenLimit)
	defer cancel()
	// A proxy that has opened nothing for idleStall while dozens of
	// openers wait on it is at a limit: stop rather than spend the minute.
	start := time.Now()
	var lastOpen atomic.Int64
	lastOpen.Store(start.UnixNano()) // the start, until a tunnel opens
	stalled := make(chan struct{})
	go func() {
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if time.Since(time.Unix(0, lastOpen.Load())) > idleStall {
					close(stalled)
					cancel()
					return
				}
			}
		}
	}()
	conns := make([]net.Conn, n)
	var (
		next    atomic.Int64
		opened  atomic.Int64
		errMu   sync.Mutex
		errKind = map[string]int{}
		wg      sync.WaitGroup
	)
	for range min(b.opt.workers*2, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}
				c, err := openIdle(ctx, t, b.up.Idle)
				if err != nil {
					errMu.Lock()
					errKind[errSummary(err)]++
					errMu.Unlock()
					continue
				}
				conns[i] = c
				opened.Add(1)
				lastOpen.Store(time.Now().UnixNano())
			}
		}()
	}
	wg.Wait()
	openSecs := time.Unix(0, lastOpen.Load()).Sub(start).Seconds() // until the last one opened
	isStalled := false
	select {
	case <-stalled:
		isStalled = true
	default:
	}
	defer func() {
		for _, c := range conns {
			if c != nil {
				_ = c.Close()
			}
		}
	}()
	got := int(opened.Load())
	if got < n {
		why := "every attempt made"
		switch {
		case isStalled:
			why = fmt.Sprintf("then none for %s", idleStall)
		case ctx.Err() != nil && b.ctx.Err() == nil:
			why = fmt.Sprintf("the %s limit", idleOpenLimit)
		}
		b.notef("idle tunnels, %s: opened %d of %d (the last after %.1fs; %s); failures: %s",
			t.name, got, n, openSecs, why, formatKinds(errKind))
	}
	settle()
	out := []measurement{{mIdleOpen, float64(got)}, {mIdleSecs, openSecs}}
	if got == 0 {
		return out, errors.New("no tunnel opened")
	}
	out = append(out, measurement{mIdleSlab, float64(kernelSlabKiB()-slab0) / float64(got)})
	if pid != 0 {
		if !t.proc.alive() {
			return out, fmt.Errorf("%s died while holding the tunnels:\n%s", t.name, t.proc.logTail())
		}
		mem1, fd1 := readMem(pid), fdCount(pid)
		if per := float64(fd1-fd0) / float64(got); per > 2.5 {
			b.notef("idle tunnels, %s: %.1f descriptors per tunnel (%s in all while holding them)", t.name, per, formatCounts(fdKinds(pid)))
		}
		out = append(out,
			measurement{mIdleKiB, float64(mem1.RSS-mem0.RSS) / float64(got)},
			measurement{mIdleFDs, float64(fd1-fd0) / float64(got)},
			measurement{mIdleThrd, float64(mem1.Threads-mem0.Threads) / float64(got)},
		)
	}
	if b.afterIdle != nil {
		b.afterIdle(t)
	}
	return out, nil
}

// openIdle opens one tunnel to the idle sink and checks that a byte makes
// the round trip to the upstream.
func openIdle(ctx context.Context, t *target, sink string) (net.Conn, error) {
	c, err := t.dialTunnel(ctx, sink, sink)
	if err != nil {
		return nil, err
	}
	// Give up at once when the opening ends (time limit or stall).
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()
	dl := time.Now().Add(opTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(dl) {
		dl = d
	}
	_ = c.SetDeadline(dl)
	var one = [1]byte{'x'}
	if _, err := c.Write(one[:]); err != nil {
		_ = c.Close()
		return nil, err
	}
	if _, err := io.ReadFull(c, one[:]); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("echo through the tunnel: %w", err)
	}
	if !stop() {
		_ = c.Close()
		return nil, ctx.Err()
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// errSummary shortens an error to its kind, for counting.
func errSummary(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && len(s)-i < 60 {
		s = s[i+2:]
	}
	if len(s) > 80 {
		s = s[:80]
	}
	return s
}

func formatKinds(m map[string]int) string {
	if len(m) == 0 {
		return "none (time ran out)"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] })
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d× %q", m[k], k))
	}
	return strings.Join(parts, ", ")
}

// formatCounts prints counts by kind, largest first.
func formatCounts(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return m[keys[i]] > m[keys[j]] })
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}

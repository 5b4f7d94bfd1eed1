package main

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// errStop ends a worker's loop without counting as a failure (a pool of
// names ran out).
var errStop = errors.New("stop")

// maxOpsPerWorker bounds every load loop in count as well as in time.
const maxOpsPerWorker = 10_000_000

// loadResult is what a timed load produced in its measured window.
type loadResult struct {
	ops     int64 // operations completed in the window
	errs    int64 // operations that failed in the window
	window  time.Duration
	lat     []time.Duration // sorted latencies of the window's operations
	cpu     float64         // proxy CPU seconds during the window (0 for direct)
	lastErr error
}

// rate is operations per second in the window.
func (r *loadResult) rate() float64 {
	if r.window <= 0 {
		return 0
	}
	return float64(r.ops) / r.window.Seconds()
}

// runLoad runs op on workers goroutines: for warmup (not recorded), then
// for dur (recorded: an operation counts when it completes in the
// window). setup makes each worker's op and its cleanup. pid, when not 0,
// is the proxy whose CPU time is read at the window's edges.
func runLoad(ctx context.Context, workers int, warmup, dur time.Duration, pid int,
	setup func(w int) (op func() error, cleanup func())) loadResult {
	start := time.Now()
	recStart := start.Add(warmup)
	recEnd := recStart.Add(dur)
	ctx, cancel := context.WithDeadline(ctx, recEnd.Add(opTimeout))
	defer cancel()

	var (
		res     loadResult
		all     latencies
		ops     atomic.Int64
		errs    atomic.Int64
		errMu   sync.Mutex
		wg      sync.WaitGroup
		lastEnd atomic.Int64
	)
	// The proxy's CPU time is read at the window's edges (or when every
	// worker has stopped early).
	workersDone := make(chan struct{})
	cpuWindow := make(chan float64, 1)
	go func() {
		if pid == 0 {
			cpuWindow <- 0
			return
		}
		sleepUntil(ctx, recStart)
		c0 := cpuSeconds(pid)
		t := time.NewTimer(time.Until(recEnd))
		defer t.Stop()
		select {
		case <-t.C:
		case <-workersDone:
		case <-ctx.Done():
		}
		cpuWindow <- cpuSeconds(pid) - c0
	}()
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			op, cleanup := setup(w)
			if cleanup != nil {
				defer cleanup()
			}
			mine := make([]time.Duration, 0, 4096)
			for i := 0; i < maxOpsPerWorker && ctx.Err() == nil; i++ {
				t0 := time.Now()
				if !t0.Before(recEnd) {
					break
				}
				err := op()
				t1 := time.Now()
				if errors.Is(err, errStop) {
					for {
						old := lastEnd.Load()
						if old >= t1.UnixNano() || lastEnd.CompareAndSwap(old, t1.UnixNano()) {
							break
						}
					}
					break
				}
				if t1.Before(recStart) || t1.After(recEnd) {
					continue // completed outside the window
				}
				if err != nil {
					errs.Add(1)
					errMu.Lock()
					res.lastErr = err
					errMu.Unlock()
					continue
				}
				ops.Add(1)
				mine = append(mine, t1.Sub(t0))
			}
			all.add(mine)
		}()
	}
	wg.Wait()
	close(workersDone)
	end := recEnd
	if le := lastEnd.Load(); le != 0 && time.Unix(0, le).Before(recEnd) {
		// The workers ran out of work (names) before the window ended: the
		// window is as long as they worked.
		end = time.Unix(0, le)
	}
	res.window = end.Sub(recStart)
	res.cpu = <-cpuWindow
	res.ops, res.errs = ops.Load(), errs.Load()
	res.lat = all.sorted()
	return res
}

// sleepUntil sleeps until t or until ctx is done.
func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
	case <-ctx.Done():
	}
}

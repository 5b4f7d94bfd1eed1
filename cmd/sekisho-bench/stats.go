package main

import (
	"slices"
	"sync"
	"time"
)

// median returns the median of xs (the mean of the middle two for an even
// count), or NaN-free 0 with ok false when xs is empty.
func median(xs []float64) (float64, bool) {
	if len(xs) == 0 {
		return 0, false
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2], true
	}
	return (s[n/2-1] + s[n/2]) / 2, true
}

// percentile returns the q-th quantile (0 < q ≤ 1) of sorted durations by
// the nearest-rank method.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(q*float64(len(sorted))+0.999999) - 1
	rank = max(0, min(rank, len(sorted)-1))
	return sorted[rank]
}

// latencies collects per-worker samples without a shared lock on the hot
// path: each worker appends to its own slice and hands it over once.
type latencies struct {
	mu  sync.Mutex
	all []time.Duration
}

// add merges one worker's samples.
func (l *latencies) add(s []time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, s...)
	l.mu.Unlock()
}

// sorted returns every sample, sorted.
func (l *latencies) sorted() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	slices.Sort(l.all)
	return l.all
}

// ms converts a duration to milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"time"
)

// The machine may be shared (other developers' test runs): a measurement
// taken while another process used the CPU is slower for reasons of no
// proxy's making. Every run records how much CPU processes outside this
// harness's own process tree (itself, the proxy, the sink) used, and the
// hypervisor's steal time; the report shows both, and the runs that were
// disturbed.

// bgMark is a reading of the machine's and this tree's CPU time.
type bgMark struct {
	at                 time.Time
	busy, steal, total float64
	own                float64
}

func markBackground() bgMark {
	busy, steal, total := machineCPU()
	return bgMark{at: time.Now(), busy: busy, steal: steal, total: total, own: cpuSeconds(os.Getpid())}
}

// bgLoad is what other processes used between two marks, as a fraction of
// the machine, and the fraction stolen by the hypervisor.
type bgLoad struct {
	foreign, steal float64
}

func backgroundSince(m bgMark) bgLoad {
	n := markBackground()
	wall := n.at.Sub(m.at).Seconds() * float64(runtime.NumCPU())
	if wall <= 0 {
		return bgLoad{}
	}
	foreign := (n.busy - m.busy) - (n.own - m.own)
	l := bgLoad{foreign: max(0, foreign/wall)}
	if dt := n.total - m.total; dt > 0 {
		l.steal = (n.steal - m.steal) / dt
	}
	return l
}

// waitQuiet waits, at most max, until other processes use less than
// threshold of the machine over half a second. It returns how long it
// waited.
func waitQuiet(maxWait time.Duration, threshold float64) time.Duration {
	start := time.Now()
	for time.Since(start) < maxWait {
		m := markBackground()
		time.Sleep(500 * time.Millisecond)
		if backgroundSince(m).foreign < threshold {
			break
		}
	}
	return time.Since(start)
}

// bgSummary is the report's line about background load.
func bgSummary(loads []bgLoad, disturbed int) string {
	if len(loads) == 0 {
		return ""
	}
	f := make([]float64, len(loads))
	s := make([]float64, len(loads))
	for i, l := range loads {
		f[i], s[i] = l.foreign, l.steal
	}
	mf, _ := median(f)
	ms, _ := median(s)
	return fmt.Sprintf("other processes used a median %.0f%% (max %.0f%%) of the machine during the %d measured runs, %d of them above %.0f%%; hypervisor steal median %.1f%%",
		100*mf, 100*slices.Max(f), len(loads), disturbed, 100*bgDisturbed, 100*ms)
}

// bgDisturbed is the share of the machine used by others above which a
// run is listed as disturbed.
const bgDisturbed = 0.10

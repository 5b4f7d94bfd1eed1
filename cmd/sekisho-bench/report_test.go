package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestMarkdownTable renders a report from fixed numbers and checks the
// medians, the ratios to direct, the skipped rows and the verdicts.
func TestMarkdownTable(t *testing.T) {
	r := newResults()
	for _, v := range []float64{50000, 60000, 55000} {
		r.add(mSmallRPS, targetDirect, v)
	}
	for _, v := range []float64{20000, 22000, 21000} {
		r.add(mSmallRPS, targetSekisho, v)
	}
	for _, v := range []float64{11000, 12000, 10000} {
		r.add(mSmallRPS, targetSquid, v)
	}
	r.add(mSmallP99, targetDirect, 2)
	r.add(mSmallP99, targetSekisho, 5)
	r.add(mSmallP99, targetSquid, 6)
	r.add(mBulkDown, targetDirect, 4000)
	r.add(mBulkDown, targetSekisho, 3000)
	r.add(mUpRSS, targetSekisho, 0.25)
	r.add(mIdleKiB, targetSekisho, 25.5)
	r.add(mIdleOpen, targetSekisho, 3350)

	rep := &report{
		Machine:  machineInfo{CPU: "Test CPU", Cores: 2, Kernel: "6.1", Go: "go1.26", Sekisho: "sekisho bench", Date: "2026-01-02 03:04 UTC"},
		Settings: []string{"Timed runs: 4s each"},
		Targets:  []string{targetDirect, targetSekisho, targetSquid},
		Results:  r,
		Notes:    []string{"a note"},
	}
	var buf bytes.Buffer
	writeMarkdown(&buf, rep, goals(10000, 65536))
	md := buf.String()

	for _, want := range []string{
		"| CPU | Test CPU, 2 cores |",
		"| Timed runs | 4s each |",
		"| Scenario | Metric | direct | sekisho | squid |",
		"| 1. Small GETs, kept-alive | requests/s | 55,000 | 21,000 (0.38×) | 11,000 (0.20×) |",
		"|  | p99 latency (ms) | 2.00 | 5.00 (2.50×) | 6.00 (3.00×) |",
		"| 2. CONNECT tunnel bulk | download (MiB/s) | 4000 | 3000 (0.75×) | – |",
		"| Small GETs: more requests/s than Squid | 1.5× Squid | 21,000 vs 11,000: 1.91× Squid | pass |",
		"| Small GETs: lower p99 than Squid |  | 5.00 ms vs Squid 6.00 ms | pass |",
		"| Tunnel download ≥ 0.8× direct | 0.9× | 0.75× direct | **FAIL** |",
		"| Plain upload: peak RSS growth < 16 MiB |  | 0.25 MiB | pass |",
		"| Idle tunnels: ≤ 20 KiB RSS each | 16 KiB | 25.5 KiB | **FAIL** |",
		"| Idle tunnels: all 10,000 opened |  | 3,350 | **FAIL** |",
		"| New tunnels/s ≥ Squid |  | sekisho not measured | n/a |",
		"- a note\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q\n%s", want, md)
		}
	}
	// Metrics nobody measured have no row.
	if strings.Contains(md, "cold handshakes/s") {
		t.Errorf("report has a row for an unmeasured metric:\n%s", md)
	}
}

// TestSquidReference falls back to issue 6's Squid ratio, labelled, when
// Squid is not measured.
func TestSquidReference(t *testing.T) {
	r := newResults()
	r.add(mICold, targetDirect, 2000)
	r.add(mICold, targetSekisho, 400)
	got, verdict := vsSquid(mICold, 2)(r)
	if verdict != verdictPass || !strings.Contains(got, "Squid's reference 0.08×direct") {
		t.Errorf("got %q, %q", got, verdict)
	}
}

func TestFormatting(t *testing.T) {
	for _, c := range []struct {
		v    float64
		want string
	}{
		{123456.7, "123,457"}, {9999.4, "9999"}, {123.4, "123"}, {12.34, "12.3"},
		{1.234, "1.23"}, {0.0123, "0.012"}, {0, "0"}, {-23456, "-23,456"},
	} {
		if got := fmtNum(c.v); got != c.want {
			t.Errorf("fmtNum(%v) = %q, want %q", c.v, got, c.want)
		}
	}
	if m, _ := median([]float64{3, 1, 2, 10}); m != 2.5 {
		t.Errorf("median = %v", m)
	}
	if got := rotate([]string{"a", "b", "c"}, 4); strings.Join(got, "") != "bca" {
		t.Errorf("rotate = %v", got)
	}
}

// TestHostNames hands out each name once and stops at the pool's end.
func TestHostNames(t *testing.T) {
	h, err := setupHosts(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(h.file)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{warmName, keepName, benchName(0), benchName(2)} {
		if !strings.Contains(string(data), upstreamIP+" "+n+"\n") {
			t.Errorf("hosts file lacks %s:\n%s", n, data)
		}
	}
	if got := h.take(2); len(got) != 2 || got[0] != benchName(0) || got[1] != benchName(1) {
		t.Errorf("take(2) = %v", got)
	}
	if got := h.take(2); len(got) != 1 || got[0] != benchName(2) {
		t.Errorf("take(2) at the end = %v", got)
	}
}

// TestIdleBar lowers the idle-tunnel bar to what the descriptor limit
// allows, and says so.
func TestIdleBar(t *testing.T) {
	r := newResults()
	r.add(mIdleOpen, targetSekisho, 9970)
	for _, g := range goals(10000, 20000) {
		if !strings.HasPrefix(g.Name, "Idle tunnels: all") {
			continue
		}
		got, verdict := g.Eval(r)
		if verdict != verdictPass || !strings.Contains(got, "the bar is 9,968") {
			t.Errorf("got %q, %q", got, verdict)
		}
	}
}

package main

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// machineInfo describes where and with what a run was made.
type machineInfo struct {
	CPU       string
	Cores     int
	Kernel    string
	Go        string
	Sekisho   string
	Squid     string
	Tinyproxy string
	Date      string
	Wall      string // the run's wall time, filled in at the end
}

// report is everything the Markdown table is made of.
type report struct {
	Machine  machineInfo
	Settings []string // one line each: flags and derived sizes
	Targets  []string // columns present, in allTargets order
	Results  *results
	Notes    []string // observations of this run (errors, caps hit, skips)
	Method   []string // how it was measured (fixed text plus settings)
}

// verdict strings of the targets table.
const (
	verdictPass = "pass"
	verdictFail = "**FAIL**"
	verdictNA   = "n/a"
)

// goal is one of issue 6's targets.
type goal struct {
	Name string
	Goal string // the stretch goal, as the issue states it
	// Eval returns the measured figure and the verdict.
	Eval func(r *results) (string, string)
}

// Squid's ratios to direct as issue 6 reports them, used only when Squid
// is not measured in this run (labelled as such).
var squidReference = map[string]float64{
	mSmallRPS: 0.21,
	mNewRate:  0.78,
	mICold:    0.08,
	mIWarm:    0.43,
}

// vsSquid compares sekisho's median to Squid's: factor is the minimum
// sekisho/Squid ratio to pass (for higher-is-better metrics).
func vsSquid(id string, factor float64) func(r *results) (string, string) {
	return func(r *results) (string, string) {
		s, ok := r.median(id, targetSekisho)
		if !ok {
			return "sekisho not measured", verdictNA
		}
		q, okq := r.median(id, targetSquid)
		if okq && q > 0 {
			x := s / q
			return fmt.Sprintf("%s vs %s: %.2f× Squid", fmtNum(s), fmtNum(q), x), passIf(x >= factor)
		}
		ref, okr := squidReference[id]
		rs, okrs := r.ratio(id, targetSekisho)
		if !okr || !okrs {
			return "Squid not measured", verdictNA
		}
		x := rs / ref
		return fmt.Sprintf("%.2f×direct vs Squid's reference %.2f×direct (Squid not measured here): %.2f×", rs, ref, x), passIf(x >= factor)
	}
}

// lowerThanSquid passes when sekisho's median is below Squid's.
func lowerThanSquid(id, unit string) func(r *results) (string, string) {
	return func(r *results) (string, string) {
		s, ok := r.median(id, targetSekisho)
		q, okq := r.median(id, targetSquid)
		if !ok || !okq {
			return "needs sekisho and Squid", verdictNA
		}
		return fmt.Sprintf("%s %s vs Squid %s %s", fmtNum(s), unit, fmtNum(q), unit), passIf(s < q)
	}
}

// ratioAtLeast passes when sekisho's ratio to direct is at least min.
func ratioAtLeast(id string, min float64) func(r *results) (string, string) {
	return func(r *results) (string, string) {
		x, ok := r.ratio(id, targetSekisho)
		if !ok {
			return "needs sekisho and direct", verdictNA
		}
		s := fmt.Sprintf("%.2f× direct", x)
		if xr, ok := r.ratio(id, targetRelay); ok {
			s += fmt.Sprintf(" (a bare Go splice relay, go-relay: %.2f×)", xr)
		}
		return s, passIf(x >= min)
	}
}

// valueBelow passes when sekisho's median is below (or at most) limit.
func valueBelow(id, unit string, limit float64, inclusive bool) func(r *results) (string, string) {
	return func(r *results) (string, string) {
		v, ok := r.median(id, targetSekisho)
		if !ok {
			return "sekisho not measured", verdictNA
		}
		pass := v < limit || (inclusive && v == limit)
		return fmt.Sprintf("%s %s", fmtNum(v), unit), passIf(pass)
	}
}

func passIf(ok bool) string {
	if ok {
		return verdictPass
	}
	return verdictFail
}

// goals are issue 6's targets that this harness can check. nofile is the
// proxies' descriptor limit: at two descriptors per tunnel it caps how many
// idle tunnels any proxy can hold.
func goals(idleTunnels, nofile int) []goal {
	want := idleTunnels
	if capacity := (nofile - 64) / 2; capacity < want {
		want = capacity
	}
	return []goal{
		{"Small GETs: more requests/s than Squid", "1.5× Squid", vsSquid(mSmallRPS, 1)},
		{"Small GETs: lower p99 than Squid", "", lowerThanSquid(mSmallP99, "ms")},
		{"Tunnel download ≥ 0.8× direct", "0.9×", ratioAtLeast(mBulkDown, 0.8)},
		{"Tunnel upload ≥ 0.8× direct", "0.9×", ratioAtLeast(mBulkUp, 0.8)},
		{"New tunnels/s ≥ Squid", "", vsSquid(mNewRate, 1)},
		{"Intercepted cold handshakes ≥ 2× Squid ssl_bump", "", vsSquid(mICold, 2)},
		{"Intercepted warm handshakes ≥ 1.5× Squid ssl_bump", "", vsSquid(mIWarm, 1.5)},
		{"Plain 1 GiB upload ≥ 0.4× direct", "", ratioAtLeast(mUpRate, 0.4)},
		{"Plain upload: peak RSS growth < 16 MiB", "", valueBelow(mUpRSS, "MiB", 16, false)},
		{"Idle tunnels: ≤ 20 KiB RSS each", "16 KiB", valueBelow(mIdleKiB, "KiB", 20, true)},
		{fmt.Sprintf("Idle tunnels: all %s opened", fmtInt(idleTunnels)), "", func(r *results) (string, string) {
			v, ok := r.median(mIdleOpen, targetSekisho)
			if !ok {
				return "sekisho not measured", verdictNA
			}
			s := fmtInt(int(v))
			if want < idleTunnels {
				s += fmt.Sprintf(" (RLIMIT_NOFILE %d leaves room for about %s at 2 descriptors each: the bar is %s)",
					nofile, fmtInt((nofile-64)/2), fmtInt(want))
			}
			return s, passIf(int(v) >= want)
		}},
	}
}

// writeMarkdown renders the report.
func writeMarkdown(w io.Writer, rep *report, gs []goal) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("# sekisho benchmarks\n\n")
	p("Generated by `go run ./cmd/sekisho-bench` (issue 6). Every figure is the **median** of the repetitions; ")
	p("`(0.42×)` is the ratio to a **direct** connection from the same client to the same loopback upstream. ")
	p("Targets were measured interleaved, in one run, on one machine.\n\n")

	p("## Machine and versions\n\n| | |\n|---|---|\n")
	m := rep.Machine
	row := func(k, v string) {
		if v != "" {
			p("| %s | %s |\n", k, mdEscape(v))
		}
	}
	row("Date", m.Date)
	row("CPU", fmt.Sprintf("%s, %d cores", m.CPU, m.Cores))
	row("Kernel", m.Kernel)
	row("Go", m.Go)
	row("sekisho", m.Sekisho)
	row("Squid", m.Squid)
	row("tinyproxy", m.Tinyproxy)
	row("Wall time", m.Wall)
	for _, s := range rep.Settings {
		k, v, _ := strings.Cut(s, ": ")
		row(k, v)
	}

	p("\n## Results\n\n")
	p("| Scenario | Metric |")
	for _, t := range rep.Targets {
		p(" %s |", t)
	}
	p("\n|---|---|")
	for range rep.Targets {
		p("---:|")
	}
	p("\n")
	last := ""
	for _, mt := range metrics {
		if !hasAny(rep.Results, mt.ID, rep.Targets) {
			continue
		}
		sc := ""
		if mt.Scenario != last {
			sc, last = mt.Scenario, mt.Scenario
		}
		label := mt.Label
		if mt.Unit != "" {
			label += " (" + mt.Unit + ")"
		}
		p("| %s | %s |", mdEscape(sc), mdEscape(label))
		for _, t := range rep.Targets {
			p(" %s |", cell(rep.Results, mt, t))
		}
		p("\n")
	}

	if len(gs) > 0 {
		p("\n## Targets of issue 6 (sekisho)\n\n| Target | Goal | Measured | Verdict |\n|---|---|---|---|\n")
		for _, g := range gs {
			measured, verdict := g.Eval(rep.Results)
			p("| %s | %s | %s | %s |\n", mdEscape(g.Name), mdEscape(g.Goal), mdEscape(measured), verdict)
		}
		p("| Rule evaluation + service + geo lookup < 1 µs, 0 allocs | | micro-benchmarks: `go test -run '^$' -bench . -benchmem ./rules/ ./geo/` | %s |\n", verdictNA)
	}
	if len(rep.Notes) > 0 {
		p("\n## Notes on this run\n\n")
		for _, n := range rep.Notes {
			p("- %s\n", n)
		}
	}
	p("\n## Every repetition\n\nIn the order measured; the tables above show their medians.\n\n| Metric |")
	for _, t := range rep.Targets {
		p(" %s |", t)
	}
	p("\n|---|")
	for range rep.Targets {
		p("---:|")
	}
	p("\n")
	for _, mt := range metrics {
		if !hasAny(rep.Results, mt.ID, rep.Targets) {
			continue
		}
		p("| %s |", mdEscape(strings.SplitN(mt.Scenario, " ", 2)[0]+" "+mt.Label))
		for _, t := range rep.Targets {
			vs := rep.Results.values(mt.ID, t)
			parts := make([]string, len(vs))
			for i, v := range vs {
				parts[i] = fmtNum(v)
			}
			if len(parts) == 0 {
				parts = []string{"–"}
			}
			p(" %s |", strings.Join(parts, " · "))
		}
		p("\n")
	}
	if len(rep.Method) > 0 {
		p("\n## Method\n\n")
		for _, n := range rep.Method {
			p("- %s\n", n)
		}
	}
}

// hasAny reports whether any target has a value for the metric.
func hasAny(r *results, id string, targets []string) bool {
	for _, t := range targets {
		if _, ok := r.median(id, t); ok {
			return true
		}
	}
	return false
}

// cell is one table cell: the median and, for ratio metrics, the ratio to
// direct.
func cell(r *results, mt metric, t string) string {
	v, ok := r.median(mt.ID, t)
	if !ok {
		return "–"
	}
	s := fmtNum(v)
	if mt.Ratio && t != targetDirect {
		if x, ok := r.ratio(mt.ID, t); ok {
			s += fmt.Sprintf(" (%.2f×)", x)
		}
	}
	return s
}

// fmtNum prints a value with a precision that suits its size, and
// thousands separators from 10,000 up.
func fmtNum(v float64) string {
	switch a := math.Abs(v); {
	case a >= 10000:
		return fmtInt(int(math.Round(v)))
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case a == 0:
		return "0"
	default:
		return strconv.FormatFloat(v, 'g', 2, 64)
	}
}

// fmtInt prints an integer with comma thousands separators.
func fmtInt(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// mdEscape keeps a value from breaking the table.
func mdEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ")
}

package report

import (
	"bytes"
	"compress/gzip"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sekisho/sekisho/proxy/audit"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

const genLines, genSeed = 3000, 8

func genReport(t testing.TB) (*Report, *expected) {
	t.Helper()
	data, exp := generate(genLines, genSeed)
	a := New(Options{GroupTitles: genTitles.groups, ServiceTitles: genTitles.services, MaxMalformed: 5})
	if err := a.Read("audit.jsonl", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	return a.Report(), exp
}

// TestReportMatchesGenerator checks the aggregation against the
// generator's own account of what it wrote, line by line.
func TestReportMatchesGenerator(t *testing.T) {
	r, exp := genReport(t)
	got := map[rowKey]Counts{}
	var total Counts
	for _, row := range r.Rows {
		got[rowKey{row.Group, row.Service, row.Country, row.Destination}] = row.Counts
		total.add(&row.Counts)
	}
	if len(got) != len(exp.rows) {
		t.Errorf("%d rows, want %d", len(got), len(exp.rows))
	}
	for k, want := range exp.rows {
		if got[k] != *want {
			t.Errorf("row %v = %+v, want %+v", k, got[k], *want)
		}
	}
	if total != r.Totals {
		t.Errorf("totals %+v are not the sum of the rows %+v", r.Totals, total)
	}
	if r.Lines.Read != exp.lines {
		t.Errorf("read %d lines, want %d", r.Lines.Read, exp.lines)
	}
	if r.Lines.Malformed != int64(len(exp.malformed)) {
		t.Errorf("%d malformed, want %d", r.Lines.Malformed, len(exp.malformed))
	}
	for i, m := range r.MalformedExamples {
		if m.File != "audit.jsonl" || m.Line != exp.malformed[i] {
			t.Errorf("malformed example %d at %s:%d, want audit.jsonl:%d", i, m.File, m.Line, exp.malformed[i])
		}
	}
	if len(r.MalformedExamples) != 5 {
		t.Errorf("%d malformed examples kept, want 5 (MaxMalformed)", len(r.MalformedExamples))
	}
	var np int64
	for _, n := range r.NotProxied {
		if exp.notProxied[n.Reason] != n.Count {
			t.Errorf("not proxied %s: %d, want %d", n.Reason, n.Count, exp.notProxied[n.Reason])
		}
		np += n.Count
	}
	if np != r.Lines.NotProxied || len(r.NotProxied) != len(exp.notProxied) {
		t.Errorf("not proxied %v, want %v", r.NotProxied, exp.notProxied)
	}
	if r.Lines.InspectedSessions != exp.sessions || exp.sessions == 0 {
		t.Errorf("%d inspected sessions, want %d (> 0)", r.Lines.InspectedSessions, exp.sessions)
	}
	if r.Lines.Counted+r.Lines.NotProxied+r.Lines.InspectedSessions+r.Lines.Malformed+r.Lines.OutsidePeriod != r.Lines.Read {
		t.Errorf("lines do not add up: %+v", r.Lines)
	}
	if !r.First.Equal(exp.first) || !r.Last.Equal(exp.last) {
		t.Errorf("period %v – %v, want %v – %v", r.First, r.Last, exp.first, exp.last)
	}
	// Coverage of the generator itself: every case the report must handle.
	seen := map[string]bool{}
	for _, row := range r.Rows {
		seen["country "+row.Country] = true
		seen["group "+row.Group] = true
		if row.Blocked > 0 {
			seen["blocked"] = true
		}
		if row.WouldBlock > 0 {
			seen["would_block"] = true
		}
		if row.OverBudget > 0 {
			seen["over_budget"] = true
		}
	}
	for _, want := range []string{"country JP", "country KR", "country CN", "country US", "country internal", "country unknown",
		"group welfare", "group tax", "group citizens", "group other", "blocked", "would_block", "over_budget"} {
		if !seen[want] {
			t.Errorf("the generated log has no %s", want)
		}
	}
}

// TestServiceMismatch: LINE, dialed mostly in Japan but declaring storage in
// Korea, is flagged; a service whose traffic goes where it declares is not.
func TestServiceMismatch(t *testing.T) {
	r, _ := genReport(t)
	by := map[string]Service{}
	for _, s := range r.Services {
		by[s.Service] = s
	}
	line := by["line"]
	if !line.Mismatch || !reflect.DeepEqual(line.Declared, []string{"KR"}) || line.Dialed[0].Country != "JP" {
		t.Errorf("line: %+v, want dialed mostly JP, declared KR, mismatch", line)
	}
	if line.Title != "LINE" {
		t.Errorf("line title %q", line.Title)
	}
	if w := by["wechat"]; w.Mismatch || len(w.Dialed) != 1 || w.Dialed[0].Country != "CN" {
		t.Errorf("wechat: %+v, want CN only, no mismatch", w)
	}
	if s := by["slack"]; s.Mismatch || len(s.Declared) != 0 {
		t.Errorf("slack: %+v, want nothing declared, no mismatch", s)
	}
	// All of LINE's traffic counts as Korea (the effective country).
	for _, row := range r.Rows {
		if row.Service == "line" && row.Country != "KR" {
			t.Errorf("line row in %s: the declared storage country must win", row.Country)
		}
	}
	if line.SentAbroadBytes != line.UploadBytes || line.SentAbroadBytes == 0 {
		t.Errorf("line sent abroad %d of %d: all of it is abroad", line.SentAbroadBytes, line.UploadBytes)
	}
}

func TestPeriod(t *testing.T) {
	data, _ := generate(genLines, genSeed)
	since := genStart.Add(24 * time.Hour)
	until := since.Add(24 * time.Hour)
	a := New(Options{Since: since, Until: until})
	if err := a.Read("a", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	r := a.Report()
	if r.First.Before(since) || !r.Last.Before(until) {
		t.Errorf("period %v – %v outside [%v, %v)", r.First, r.Last, since, until)
	}
	if r.Lines.OutsidePeriod == 0 || r.Lines.Counted == 0 {
		t.Errorf("lines %+v: want some in and some outside", r.Lines)
	}
	if r.Timeline.Unit != "hour" || len(r.Timeline.Points) != 24 {
		t.Errorf("timeline of one day: unit %s, %d points; want hour, 24", r.Timeline.Unit, len(r.Timeline.Points))
	}
	if p := r.Timeline.Points[0].Start; !p.Equal(since) {
		t.Errorf("first hour starts %v, want %v", p, since)
	}
}

func TestTimelineUnits(t *testing.T) {
	jst := time.FixedZone("", 9*3600)
	line := func(at time.Time, action string) string {
		return fmt.Sprintf(`{"time":%q,"kind":"request","action":%q,"client_group":"g","service":"s","country":"KR","destination":"foreign"}`,
			at.Format(time.RFC3339), action) + "\n"
	}
	tests := []struct {
		name   string
		span   time.Duration
		unit   string
		points int
	}{
		{"two days in hours", 47 * time.Hour, "hour", 48},
		{"a month in days", 30 * 24 * time.Hour, "day", 31},
		{"a year in weeks", 364 * 24 * time.Hour, "week", 53},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Date(2026, 1, 1, 0, 30, 0, 0, jst) // a Thursday
			log := line(start, "block") + line(start.Add(tt.span), "block") + line(start.Add(tt.span/2), "allow")
			a := New(Options{})
			if err := a.Read("t", strings.NewReader(log)); err != nil {
				t.Fatal(err)
			}
			tl := a.Report().Timeline
			if tl.Unit != tt.unit || len(tl.Points) != tt.points {
				t.Fatalf("unit %s with %d points, want %s with %d", tl.Unit, len(tl.Points), tt.unit, tt.points)
			}
			var sum int64
			for _, p := range tl.Points {
				sum += p.Blocked
				if _, off := p.Start.Zone(); off != 9*3600 {
					t.Errorf("bucket %v is not in the log's offset", p.Start)
				}
			}
			if sum != 2 || tl.Points[0].Blocked != 1 || tl.Points[len(tl.Points)-1].Blocked != 1 {
				t.Errorf("blocks in the wrong buckets: %+v", tl.Points)
			}
			if tt.unit == "week" && tl.Points[0].Start.Weekday() != time.Monday {
				t.Errorf("weeks start on %v, want Monday", tl.Points[0].Start.Weekday())
			}
		})
	}
}

// TestMemoryBoundedByKeys: ten times the lines, the same keys, the same
// state.
func TestMemoryBoundedByKeys(t *testing.T) {
	data, _ := generate(genLines, genSeed)
	a := New(Options{})
	sizes := func() [3]int { return [3]int{len(a.rows), len(a.services), len(a.hours)} }
	if err := a.Read("a", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	// Same lines again, ten times, shifted into the same hours: no new keys.
	before := sizes()
	for range 10 {
		if err := a.Read("a", bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	if after := sizes(); after != before {
		t.Errorf("state grew from %v to %v with repeated lines", before, after)
	}
}

func TestReadGzipAndTruncation(t *testing.T) {
	data, exp := generate(500, 1)
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	zw.Write(data)
	zw.Close()
	a := New(Options{})
	if err := a.Read("audit.jsonl.1.gz", bytes.NewReader(zbuf.Bytes())); err != nil {
		t.Fatal(err)
	}
	r := a.Report()
	if !r.Inputs[0].Gzip || r.Inputs[0].Lines != exp.lines {
		t.Errorf("input %+v, want gzip with %d lines", r.Inputs[0], exp.lines)
	}
	b := New(Options{})
	err := b.Read("cut.gz", bytes.NewReader(zbuf.Bytes()[:zbuf.Len()/2]))
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated gzip: error %v, want unexpected EOF", err)
	}
	in := b.Report().Inputs[0]
	if in.Error == "" || in.Lines == 0 || in.Lines >= exp.lines {
		t.Errorf("truncated input %+v: want an error and the lines before it", in)
	}
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		gl, wl := strings.Split(string(got), "\n"), strings.Split(string(want), "\n")
		for i := range max(len(gl), len(wl)) {
			var g, w string
			if i < len(gl) {
				g = gl[i]
			}
			if i < len(wl) {
				w = wl[i]
			}
			if g != w {
				t.Fatalf("%s differs from the golden file at line %d:\n got %q\nwant %q\n(run go test -update if the change is intended)", name, i+1, g, w)
			}
		}
	}
}

func TestGolden(t *testing.T) {
	r, _ := genReport(t)
	for _, format := range []string{"table", "csv", "json"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			if err := Write(&buf, r, format); err != nil {
				t.Fatal(err)
			}
			golden(t, "report."+format+".golden", buf.Bytes())
		})
	}
}

func TestCSV(t *testing.T) {
	r, _ := genReport(t)
	var buf bytes.Buffer
	if err := WriteCSV(&buf, r); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	if !bytes.HasPrefix(data, []byte{0xEF, 0xBB, 0xBF}) {
		t.Fatal("no UTF-8 byte order mark: Excel in Japan would read Shift_JIS")
	}
	if !utf8.Valid(data) {
		t.Fatal("not UTF-8")
	}
	recs, err := csv.NewReader(bytes.NewReader(data[3:])).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(recs[0], csvHeader) || len(recs) != len(r.Rows)+1 {
		t.Fatalf("header %q and %d records, want %q and %d", recs[0], len(recs), csvHeader, len(r.Rows)+1)
	}
	if !bytes.Contains(data, []byte("福祉課")) {
		t.Error("the department titles are missing")
	}
}

func TestJSONRoundTrip(t *testing.T) {
	r, _ := genReport(t)
	var buf bytes.Buffer
	if err := WriteJSON(&buf, r); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back.Rows, r.Rows) || back.Totals != r.Totals || !back.First.Equal(r.First) {
		t.Error("the JSON does not read back to the same report")
	}
}

func TestDisplayWidth(t *testing.T) {
	for s, want := range map[string]int{"": 0, "tax": 3, "福祉課": 6, "welfare 福祉課": 14, "Google ドライブ": 15, "ｱ": 1, "Ａ": 2, "e\u0301": 1, "한국": 4} {
		if got := DisplayWidth(s); got != want {
			t.Errorf("DisplayWidth(%q) = %d, want %d", s, got, want)
		}
	}
	var buf bytes.Buffer
	tb := Table{Header: []string{"A", "N"}, Rows: [][]string{{"福祉課", "1"}, {"tax", "22"}}, Right: map[int]bool{1: true}}
	if err := tb.Write(&buf); err != nil {
		t.Fatal(err)
	}
	if want := "A        N\n福祉課   1\ntax     22\n"; buf.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", buf.String(), want)
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 20: "5.0 MiB", 123 << 30: "123 GiB"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1234: "-1,234"} {
		if got := FormatCount(n); got != want {
			t.Errorf("FormatCount(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestEmpty: no lines, every format still writes a report that says so.
func TestEmpty(t *testing.T) {
	r := New(Options{}).Report()
	for _, f := range Formats {
		var buf bytes.Buffer
		if err := Write(&buf, r, f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		if buf.Len() == 0 {
			t.Errorf("%s: empty output", f)
		}
	}
}

// BenchmarkReport measures the whole of `sekisho report` but the output:
// reading, decoding and aggregating generated audit lines.
func BenchmarkReport(b *testing.B) {
	data, exp := generate(50000, 2)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		a := New(Options{})
		if err := a.Read("bench", bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(exp.lines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkReportGzip is BenchmarkReport on a gzip-rotated file.
func BenchmarkReportGzip(b *testing.B) {
	data, exp := generate(50000, 2)
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	zw.Write(data)
	zw.Close()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		a := New(Options{})
		if err := a.Read("bench.gz", bytes.NewReader(zbuf.Bytes())); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(exp.lines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

var _ = audit.KindRequest

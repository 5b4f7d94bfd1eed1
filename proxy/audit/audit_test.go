package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestFieldNames pins the field names: each one is part of the format that
// SIEMs, `sekisho report` and `sekisho whatif` read.
func TestFieldNames(t *testing.T) {
	fields := map[string]string{
		FieldID: "id", FieldKind: "kind", FieldClient: "client", FieldClientGroup: "client_group",
		FieldMethod: "method", FieldScheme: "scheme", FieldHost: "host", FieldPort: "port",
		FieldPath: "path", FieldAddr: "addr", FieldCountry: "country", FieldDeclared: "declared_country",
		FieldEffective: "effective_country", FieldDestination: "destination", FieldASN: "asn",
		FieldService: "service", FieldEndpoint: "endpoint", FieldRule: "rule", FieldAction: "action",
		FieldWouldBlock: "would_block", FieldFailClosed: "fail_closed", FieldMode: "mode",
		FieldBodyBytes: "body_bytes", FieldContentType: "content_type", FieldFileParts: "file_parts",
		FieldPartTypes: "part_types", FieldUploadBytes: "upload_bytes", FieldDownloadBytes: "download_bytes",
		FieldBudget: "budget", FieldBudgetExceeded: "budget_exceeded", FieldStatus: "status",
		FieldDuration: "duration_ms", FieldReason: "reason", FieldError: "error", FieldRulesHash: "rules_hash",
	}
	if len(fields) != 35 {
		t.Fatalf("%d distinct field names, want 35: two constants share a name", len(fields))
	}
	for got, want := range fields {
		if got != want {
			t.Errorf("field %q renamed to %q: a breaking change for every consumer", want, got)
		}
		switch got {
		case slog.TimeKey, slog.LevelKey, slog.MessageKey, "query":
			t.Errorf("field name %q is reserved", got)
		}
	}
}

func full() *Record {
	return &Record{
		ID:             "req-1",
		Kind:           KindRequest,
		Client:         "10.1.2.3:50123",
		ClientGroup:    "staff",
		Method:         "POST",
		Scheme:         "https",
		Host:           "obs.line-scdn.net",
		Port:           443,
		Path:           "/r/talk/m/upload",
		Addr:           "203.0.113.7:443",
		Country:        "KR",
		Declared:       "KR",
		Effective:      "KR",
		Destination:    "foreign",
		ASN:            38631,
		Service:        "line",
		Endpoint:       "media-upload",
		Rule:           "block-foreign-uploads",
		Action:         "block",
		WouldBlock:     true,
		FailClosed:     true,
		Mode:           "http",
		BodyBytes:      5 << 20,
		ContentType:    "multipart/form-data",
		FileParts:      "yes",
		PartTypes:      []string{"image/jpeg", "application/pdf"},
		UploadBytes:    1234,
		DownloadBytes:  5678,
		Budget:         1 << 20,
		BudgetExceeded: true,
		Status:         403,
		Duration:       12345678 * time.Nanosecond,
		Reason:         "upload_budget_exceeded",
		Error:          "connection reset by peer",
		RulesHash:      "sha256:abc123",
	}
}

// lines logs records and returns the output split into decoded JSON lines.
func lines(t *testing.T, recs ...*Record) []map[string]any {
	t.Helper()
	var buf bytes.Buffer
	l := New(&buf)
	for _, r := range recs {
		l.Log(r)
	}
	return decode(t, buf.Bytes(), len(recs))
}

func decode(t *testing.T, out []byte, n int) []map[string]any {
	t.Helper()
	if len(out) == 0 || out[len(out)-1] != '\n' {
		t.Fatalf("output does not end in a newline: %q", out)
	}
	raw := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	if len(raw) != n {
		t.Fatalf("%d lines for %d records:\n%s", len(raw), n, out)
	}
	var res []map[string]any
	for i, line := range raw {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %d is not a JSON object: %v\n%s", i+1, err, line)
		}
		res = append(res, m)
	}
	return res
}

func TestLogOneLinePerRecord(t *testing.T) {
	recs := []*Record{
		{ID: "a", Kind: KindRequest, Host: "line\nbreak.example", Error: "multi\nline\r\nerror"},
		full(),
		{ID: "c", Kind: KindTunnel},
	}
	got := lines(t, recs...)
	for i, m := range got {
		if m[FieldID] != recs[i].ID {
			t.Errorf("line %d has id %v, want %q", i+1, m[FieldID], recs[i].ID)
		}
		if m[slog.MessageKey] != recs[i].Kind {
			t.Errorf("line %d msg = %v, want the kind %q", i+1, m[slog.MessageKey], recs[i].Kind)
		}
		if ts, ok := m[slog.TimeKey].(string); !ok {
			t.Errorf("line %d has no time", i+1)
		} else if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
			t.Errorf("line %d time %q: %v", i+1, ts, err)
		}
	}
	if got[0][FieldHost] != "line\nbreak.example" {
		t.Errorf("host = %q, want the newline kept inside the JSON string", got[0][FieldHost])
	}
}

func TestLogConcurrent(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf)
	const workers, each = 8, 50
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				r := full()
				r.ID = fmt.Sprintf("w%d-%d", w, i)
				l.Log(r)
			}
		})
	}
	wg.Wait()
	seen := map[any]bool{}
	for _, m := range decode(t, buf.Bytes(), workers*each) {
		seen[m[FieldID]] = true
	}
	if len(seen) != workers*each {
		t.Errorf("%d distinct ids, want %d", len(seen), workers*each)
	}
}

func TestLogAllFields(t *testing.T) {
	got := lines(t, full())[0]
	want := map[string]any{
		FieldID: "req-1", FieldKind: "request", FieldClient: "10.1.2.3:50123", FieldClientGroup: "staff",
		FieldMethod: "POST", FieldScheme: "https", FieldHost: "obs.line-scdn.net", FieldPort: 443.0,
		FieldPath: "/r/talk/m/upload", FieldAddr: "203.0.113.7:443", FieldCountry: "KR",
		FieldDeclared: "KR", FieldEffective: "KR", FieldDestination: "foreign", FieldASN: 38631.0,
		FieldService: "line", FieldEndpoint: "media-upload", FieldRule: "block-foreign-uploads",
		FieldAction: "block", FieldWouldBlock: true, FieldFailClosed: true, FieldMode: "http",
		FieldBodyBytes: float64(5 << 20), FieldContentType: "multipart/form-data", FieldFileParts: "yes",
		FieldPartTypes: []any{"image/jpeg", "application/pdf"}, FieldUploadBytes: 1234.0,
		FieldDownloadBytes: 5678.0, FieldBudget: float64(1 << 20), FieldBudgetExceeded: true,
		FieldStatus: 403.0, FieldDuration: 12.345, FieldReason: "upload_budget_exceeded",
		FieldError: "connection reset by peer", FieldRulesHash: "sha256:abc123",
		slog.LevelKey: "WARN", slog.MessageKey: "request",
	}
	for k, v := range want {
		if !reflect.DeepEqual(got[k], v) {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	delete(got, slog.TimeKey)
	if extra := slices.Sorted(maps.Keys(got)); len(extra) != len(want) {
		t.Errorf("keys %q, want exactly %d", extra, len(want))
	}
}

func TestLogOmitsZeroFields(t *testing.T) {
	always := []string{slog.TimeKey, slog.LevelKey, slog.MessageKey, FieldID, FieldKind, FieldUploadBytes, FieldDownloadBytes, FieldDuration}
	t.Run("minimal record", func(t *testing.T) {
		got := lines(t, &Record{ID: "x", Kind: KindTunnel})[0]
		if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, slices.Sorted(slices.Values(always))) {
			t.Errorf("keys = %q, want only %q", keys, slices.Sorted(slices.Values(always)))
		}
		if got[FieldUploadBytes] != 0.0 || got[FieldDownloadBytes] != 0.0 || got[FieldDuration] != 0.0 {
			t.Errorf("byte counts and duration must be present even when zero: %v", got)
		}
	})
	// Each optional field appears exactly when it is set.
	tests := []struct {
		key  string
		set  func(*Record)
		want any
	}{
		{FieldClient, func(r *Record) { r.Client = "10.0.0.1:1" }, "10.0.0.1:1"},
		{FieldClientGroup, func(r *Record) { r.ClientGroup = "g" }, "g"},
		{FieldMethod, func(r *Record) { r.Method = "PUT" }, "PUT"},
		{FieldScheme, func(r *Record) { r.Scheme = "http" }, "http"},
		{FieldHost, func(r *Record) { r.Host = "h.example" }, "h.example"},
		{FieldPort, func(r *Record) { r.Port = 8443 }, 8443.0},
		{FieldPath, func(r *Record) { r.Path = "/p" }, "/p"},
		{FieldAddr, func(r *Record) { r.Addr = "[2001:db8::1]:443" }, "[2001:db8::1]:443"},
		{FieldCountry, func(r *Record) { r.Country = "JP" }, "JP"},
		{FieldDeclared, func(r *Record) { r.Declared = "US" }, "US"},
		{FieldEffective, func(r *Record) { r.Effective = "US" }, "US"},
		{FieldDestination, func(r *Record) { r.Destination = "domestic" }, "domestic"},
		{FieldASN, func(r *Record) { r.ASN = 4294967295 }, 4294967295.0},
		{FieldService, func(r *Record) { r.Service = "slack" }, "slack"},
		{FieldEndpoint, func(r *Record) { r.Endpoint = "files" }, "files"},
		{FieldRule, func(r *Record) { r.Rule = "r" }, "r"},
		{FieldAction, func(r *Record) { r.Action = "allow" }, "allow"},
		{FieldWouldBlock, func(r *Record) { r.WouldBlock = true }, true},
		{FieldFailClosed, func(r *Record) { r.FailClosed = true }, true},
		{FieldMode, func(r *Record) { r.Mode = "websocket" }, "websocket"},
		{FieldBodyBytes, func(r *Record) { r.BodyBytes = 10 }, 10.0},
		{FieldBodyBytes, func(r *Record) { r.BodyBytes = -1 }, -1.0}, // unknown size is logged
		{FieldContentType, func(r *Record) { r.ContentType = "image/png" }, "image/png"},
		{FieldFileParts, func(r *Record) { r.FileParts = "unknown" }, "unknown"},
		{FieldPartTypes, func(r *Record) { r.PartTypes = []string{"image/png"} }, []any{"image/png"}},
		{FieldBudget, func(r *Record) { r.Budget = 1024 }, 1024.0},
		{FieldBudget, func(r *Record) { r.Budget = -1 }, -1.0}, // unlimited stream
		{FieldBudgetExceeded, func(r *Record) { r.BudgetExceeded = true }, true},
		{FieldStatus, func(r *Record) { r.Status = 200 }, 200.0},
		{FieldReason, func(r *Record) { r.Reason = "resolve" }, "resolve"},
		{FieldError, func(r *Record) { r.Error = "boom" }, "boom"},
		{FieldRulesHash, func(r *Record) { r.RulesHash = "h" }, "h"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s=%v", tt.key, tt.want), func(t *testing.T) {
			r := &Record{ID: "x", Kind: KindRequest}
			tt.set(r)
			got := lines(t, &Record{ID: "zero", Kind: KindRequest, PartTypes: []string{}}, r)
			if v, ok := got[0][tt.key]; ok {
				t.Errorf("zero record has %s = %v", tt.key, v)
			}
			if v := got[1][tt.key]; !reflect.DeepEqual(v, tt.want) {
				t.Errorf("%s = %#v, want %#v", tt.key, v, tt.want)
			}
			if len(got[1]) != len(always)+1 {
				t.Errorf("setting %s added %d keys, want 1: %v", tt.key, len(got[1])-len(always), got[1])
			}
		})
	}
}

func TestLevel(t *testing.T) {
	tests := []struct {
		name string
		r    Record
		want slog.Level
	}{
		{name: "allow", r: Record{Action: "allow", Status: 200}, want: slog.LevelInfo},
		{name: "no decision", r: Record{}, want: slog.LevelInfo},
		{name: "block", r: Record{Action: "block", Status: 403}, want: slog.LevelWarn},
		{name: "block tunnel without status", r: Record{Action: "block"}, want: slog.LevelWarn},
		{name: "log", r: Record{Action: "log", Status: 200}, want: slog.LevelWarn},
		{name: "would block", r: Record{Action: "allow", WouldBlock: true, Status: 200}, want: slog.LevelWarn},
		{name: "budget exceeded", r: Record{Action: "allow", BudgetExceeded: true, Status: 200}, want: slog.LevelWarn},
		{name: "400", r: Record{Status: 400}, want: slog.LevelWarn},
		{name: "403 refusal", r: Record{Status: 403}, want: slog.LevelWarn},
		{name: "404 from upstream", r: Record{Action: "allow", Status: 404}, want: slog.LevelWarn},
		{name: "499", r: Record{Status: 499}, want: slog.LevelWarn},
		{name: "399", r: Record{Status: 399}, want: slog.LevelInfo},
		{name: "302", r: Record{Action: "allow", Status: 302}, want: slog.LevelInfo},
		{name: "500", r: Record{Status: 500}, want: slog.LevelInfo},
		{name: "502", r: Record{Status: 502}, want: slog.LevelInfo},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.r.Level(); got != tt.want {
				t.Errorf("Level() = %v, want %v", got, tt.want)
			}
			r := tt.r
			r.ID, r.Kind = "x", KindRequest
			if got := lines(t, &r)[0][slog.LevelKey]; got != tt.want.String() {
				t.Errorf("logged level = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestDurationMilliseconds(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want float64
	}{
		{0, 0},
		{time.Millisecond, 1},
		{1500 * time.Microsecond, 1.5},
		{2*time.Second + 345678*time.Microsecond, 2345.678},
		{999 * time.Nanosecond, 0},               // below a microsecond
		{1234567891 * time.Nanosecond, 1234.567}, // microsecond precision
		{90 * time.Minute, 5_400_000},
	}
	for _, tt := range tests {
		t.Run(tt.d.String(), func(t *testing.T) {
			got := lines(t, &Record{ID: "x", Kind: KindRequest, Duration: tt.d})[0][FieldDuration]
			if got != tt.want {
				t.Errorf("duration_ms for %v = %v, want %v", tt.d, got, tt.want)
			}
		})
	}
}

// TestNoQuery: the query string is never logged — there is no field for it,
// so a record cannot carry one.
func TestNoQuery(t *testing.T) {
	for f := range reflect.TypeFor[Record]().Fields() {
		if strings.Contains(strings.ToLower(f.Name), "query") || strings.Contains(strings.ToLower(f.Name), "url") {
			t.Errorf("Record has a field %s: the URL and its query are never logged", f.Name)
		}
	}
	for k := range lines(t, full())[0] {
		if strings.Contains(k, "query") || strings.Contains(k, "url") {
			t.Errorf("audit line has a key %q", k)
		}
	}
}

func TestNewNilDiscards(t *testing.T) {
	l := New(nil)
	l.Log(full()) // must not panic
}

// flakyWriter fails its first write (a full disk for a moment), then
// works again.
type flakyWriter struct {
	mu     sync.Mutex
	failed bool
	buf    bytes.Buffer
}

func (f *flakyWriter) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.failed {
		f.failed = true
		return 0, errors.New("no space left on device")
	}
	return f.buf.Write(p)
}

func (f *flakyWriter) String() string { f.mu.Lock(); defer f.mu.Unlock(); return f.buf.String() }

// TestWriteErrorNotSticky: a failed write loses the lines it carried,
// is reported with their number, and the lines after it are written
// (bufio.Writer alone would refuse every later write).
func TestWriteErrorNotSticky(t *testing.T) {
	for _, buffered := range []bool{true, false} {
		w := &flakyWriter{}
		var l *Logger
		if buffered {
			l = NewBuffered(w, time.Hour) // flushed by hand below
		} else {
			l = New(w)
		}
		var errs, lost int
		l.OnError = func(err error, lines int) { errs++; lost += lines }
		l.Log(&Record{ID: "first", Kind: KindRequest})
		l.Log(&Record{ID: "second", Kind: KindRequest})
		if err := l.Flush(); buffered && err == nil {
			t.Error("buffered: the failed flush returned no error")
		}
		for range 5 {
			l.Log(&Record{ID: "later", Kind: KindRequest})
		}
		if err := l.Close(); err != nil {
			t.Errorf("buffered=%v: Close: %v", buffered, err)
		}
		if n := strings.Count(w.String(), `"later"`); n != 5 {
			t.Errorf("buffered=%v: %d of 5 lines after a write error were written", buffered, n)
		}
		wantLost := 2 // both lines were in the failed flush
		if !buffered {
			wantLost = 1 // the first line's own write failed
		}
		if errs != 1 || lost != wantLost {
			t.Errorf("buffered=%v: OnError called %d times for %d lost lines, want once for %d", buffered, errs, lost, wantLost)
		}
	}
}

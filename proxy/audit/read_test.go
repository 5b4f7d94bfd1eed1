package audit

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// fullWhatif is full() with the facts only `sekisho whatif` needs.
func fullWhatif() *Record {
	r := full()
	r.Inspection = "bypass:line"
	r.Stream = true
	r.Encoded = true
	r.BodyBytesMin = 65537
	r.PartsIncomplete = true
	return r
}

func readAll(t *testing.T, data []byte) ([]Entry, []error) {
	t.Helper()
	rd, err := NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var out []Entry
	var errs []error
	for {
		var e Entry
		err := rd.Next(&e)
		if err == io.EOF {
			return out, errs
		}
		if err != nil {
			errs = append(errs, err)
			var le *LineError
			if !errors.As(err, &le) {
				return out, errs
			}
			continue
		}
		out = append(out, e)
	}
}

// TestRoundTrip: every field Log writes comes back as it was. A field
// added to Record and Log but not to the decoder fails here.
func TestRoundTrip(t *testing.T) {
	recs := []*Record{
		fullWhatif(),
		{ID: "a", Kind: KindRequest, Host: "line\nbreak.example", Error: "multi\nline\r\n\"quoted\" \\ error ✓ 😀", Path: "/ファイル/a b"},
		{ID: "t", Kind: KindTunnel, Budget: -1, BodyBytes: -1, Duration: 1500 * time.Microsecond},
		{ID: "z", Kind: KindRequest, PartTypes: []string{}},
	}
	var buf bytes.Buffer
	l := New(&buf)
	before := time.Now().Add(-time.Second)
	for _, r := range recs {
		l.Log(r)
	}
	got, errs := readAll(t, buf.Bytes())
	if len(errs) > 0 {
		t.Fatalf("errors: %v", errs)
	}
	if len(got) != len(recs) {
		t.Fatalf("%d entries, want %d", len(got), len(recs))
	}
	for i, e := range got {
		want := *recs[i]
		want.Duration = want.Duration.Truncate(time.Microsecond)
		if len(want.PartTypes) == 0 {
			want.PartTypes = nil
		}
		if len(e.PartTypes) == 0 {
			e.PartTypes = nil
		}
		if !reflect.DeepEqual(e.Record, want) {
			t.Errorf("entry %d:\n got %+v\nwant %+v", i, e.Record, want)
		}
		if e.Time.Before(before) || e.Time.After(time.Now().Add(time.Second)) {
			t.Errorf("entry %d: time %v is not now", i, e.Time)
		}
		if want := want.Level().String(); e.Level != want {
			t.Errorf("entry %d: level %q, want %q", i, e.Level, want)
		}
	}
}

// TestLogWhatifFields: the facts for whatif appear exactly when set.
func TestLogWhatifFields(t *testing.T) {
	got := lines(t, fullWhatif(), &Record{ID: "zero", Kind: KindRequest})
	want := map[string]any{FieldInspection: "bypass:line", FieldStream: true, FieldEncoded: true, FieldBodyBytesMin: 65537.0, FieldPartsIncomplete: true}
	for k, v := range want {
		if got[0][k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[0][k], v)
		}
		if v, ok := got[1][k]; ok {
			t.Errorf("zero record has %s = %v", k, v)
		}
	}
}

func TestDecodeTolerates(t *testing.T) {
	tests := []struct {
		name string
		line string
		want Record
	}{
		{"unknown fields of every type",
			`{"time":"2026-06-18T10:11:12.345+09:00","x":{"a":[1,{"b":null}],"c":"}"},"kind":"request","y":[],"z":-1.5e3,"w":true,"v":null,"service":"line"}`,
			Record{Kind: "request", Service: "line"}},
		{"whitespace", " { \"time\" : \"2026-06-18T01:11:12Z\" ,\t\"kind\":\"tunnel\" , \"port\" : 443 } ",
			Record{Kind: "tunnel", Port: 443}},
		{"escaped key and value", `{"time":"2026-06-18T01:11:12Z","kin\u0064":"request","host":"a\u002eexample","path":"/\ud83d\ude00\/x"}`,
			Record{Kind: "request", Host: "a.example", Path: "/😀/x"}},
		{"lone surrogate", `{"time":"2026-06-18T01:11:12Z","kind":"request","path":"/\ud83d"}`,
			Record{Kind: "request", Path: "/\uFFFD"}},
		{"nulls", `{"time":"2026-06-18T01:11:12Z","kind":"request","host":null,"port":null,"would_block":null,"part_types":null,"duration_ms":null}`,
			Record{Kind: "request"}},
		{"exponent duration", `{"time":"2026-06-18T01:11:12Z","kind":"request","duration_ms":1.5e3}`,
			Record{Kind: "request", Duration: 1500 * time.Millisecond}},
		{"future kind", `{"time":"2026-06-18T01:11:12Z","kind":"dns"}`, Record{Kind: "dns"}},
	}
	d := NewDecoder()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e Entry
			if err := d.Decode([]byte(tt.line), &e); err != nil {
				t.Fatal(err)
			}
			if len(e.PartTypes) == 0 {
				e.PartTypes = nil
			}
			if !reflect.DeepEqual(e.Record, tt.want) {
				t.Errorf("got %+v\nwant %+v", e.Record, tt.want)
			}
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	const ok = `"time":"2026-06-18T01:11:12Z","kind":"request"`
	tests := []struct{ line, want string }{
		{`not json`, `unexpected 'n', want '{'`},
		{`{` + ok, `unexpected end of line, want , or }`},
		{`{` + ok + `}}`, `unexpected data after the object`},
		{`{` + ok + `,"port":"443"}`, `port: want a number`},
		{`{` + ok + `,"port":70000}`, `port: port 70000 out of range`},
		{`{` + ok + `,"port":4.5}`, `port: want an integer`},
		{`{` + ok + `,"body_bytes":99999999999999999999}`, `body_bytes: want an integer`},
		{`{` + ok + `,"would_block":"yes"}`, `would_block: want true or false`},
		{`{` + ok + `,"host":"a\qb"}`, `host: bad escape \q`},
		{`{` + ok + `,"host":"abc}`, `host: unterminated string`},
		{`{` + ok + `,"part_types":["a",1]}`, `part_types: want a string`},
		{`{` + ok + `,"x":[1,2}`, `x: unexpected '}' in [`},
		{`{` + ok + `,"x":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`, `nested too deeply`},
		{`{"kind":"request"}`, `not an audit line: no time`},
		{`{"time":"2026-06-18T01:11:12Z"}`, `not an audit line: no kind`},
		{`{"time":"yesterday","kind":"request"}`, `time: time "yesterday" is not RFC 3339`},
		{`{"time":"2026-02-30T01:11:12Z","kind":"request"}`, `is not RFC 3339`},
		{`{"time":"2026-06-18T01:11:12+0900","kind":"request"}`, `is not RFC 3339`},
		{`{"time":"2026-06-18T24:11:12Z","kind":"request"}`, `is not RFC 3339`},
		{`{"time":"2026-06-18T01:11:12.Z","kind":"request"}`, `is not RFC 3339`},
		{`[]`, `want '{'`},
		{`{"time":"2026-06-18T01:11:12Z","kind":"request",}`, `want a string`},
	}
	d := NewDecoder()
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			var e Entry
			err := d.Decode([]byte(tt.line), &e)
			if err == nil {
				t.Fatalf("accepted")
			}
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Errorf("error %T, want *SyntaxError", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestParseTime(t *testing.T) {
	d := NewDecoder()
	for _, s := range []string{
		"2026-06-18T10:11:12.345+09:00", "2026-06-18T01:11:12Z", "2026-06-18T01:11:12.123456789-05:30",
		"2024-02-29T23:59:59.9+14:00", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59.5Z", "2000-03-01T00:00:00+00:00",
		"2100-12-31T12:00:00.000001-12:00", "0001-01-01T00:00:00Z",
	} {
		want, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := d.parseTime([]byte(s))
		if err != nil {
			t.Errorf("%s: %v", s, err)
			continue
		}
		_, wo := want.Zone()
		_, gotOff := got.Zone()
		if !got.Equal(want) || wo != gotOff {
			t.Errorf("%s: got %v, want %v", s, got, want)
		}
		if got.Format(time.RFC3339Nano) != want.Format(time.RFC3339Nano) {
			t.Errorf("%s: formats as %s, want %s", s, got.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano))
		}
	}
}

func TestReaderLines(t *testing.T) {
	const good = `{"time":"2026-06-18T01:11:12Z","kind":"request","id":"%d"}`
	long := `{"time":"2026-06-18T01:11:12Z","kind":"request","id":"` + strings.Repeat("x", MaxLineBytes) + `"}`
	input := fmt.Sprintf(good, 1) + "\r\n" + // CRLF
		"\n   \n" + // blank lines are not lines to report
		"garbage\n" + // line 4
		fmt.Sprintf(good, 5) + "\n" +
		long + "\n" + // line 6: too long, skipped
		fmt.Sprintf(good, 7) // no final newline
	got, errs := readAll(t, []byte(input))
	var ids []string
	for _, e := range got {
		ids = append(ids, e.ID)
	}
	if want := []string{"1", "5", "7"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("ids %q, want %q", ids, want)
	}
	var lines []int
	for _, err := range errs {
		var le *LineError
		if !errors.As(err, &le) {
			t.Fatalf("error %v is not a LineError", err)
		}
		lines = append(lines, le.Line)
	}
	if want := []int{4, 6}; !reflect.DeepEqual(lines, want) {
		t.Errorf("malformed lines %v, want %v (errors %v)", lines, want, errs)
	}
}

func gz(t *testing.T, members ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, m := range members {
		zw := gzip.NewWriter(&buf)
		if _, err := zw.Write([]byte(m)); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func TestReaderGzip(t *testing.T) {
	line := func(id string) string {
		return `{"time":"2026-06-18T01:11:12Z","kind":"request","id":"` + id + "\"}\n"
	}
	t.Run("detected by magic, several members", func(t *testing.T) {
		data := gz(t, line("a")+line("b"), line("c"))
		rd, err := NewReader(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if !rd.Gzip() {
			t.Error("not detected as gzip")
		}
		got, errs := readAll(t, data)
		if len(got) != 3 || len(errs) != 0 {
			t.Errorf("%d entries, errors %v; want 3 and none", len(got), errs)
		}
	})
	t.Run("plain is not gzip", func(t *testing.T) {
		rd, err := NewReader(strings.NewReader(line("a")))
		if err != nil || rd.Gzip() {
			t.Errorf("plain input: gzip=%v err=%v", rd != nil && rd.Gzip(), err)
		}
	})
	t.Run("empty", func(t *testing.T) {
		got, errs := readAll(t, nil)
		if len(got) != 0 || len(errs) != 0 {
			t.Errorf("empty input: %v %v", got, errs)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		var many strings.Builder
		for i := range 2000 {
			many.WriteString(line(fmt.Sprint(i)))
		}
		data := gz(t, many.String())
		got, errs := readAll(t, data[:len(data)/2])
		if len(got) == 0 || len(got) >= 2000 {
			t.Errorf("%d entries from half a file", len(got))
		}
		last := errs[len(errs)-1]
		var le *LineError
		if errors.As(last, &le) || !errors.Is(last, io.ErrUnexpectedEOF) {
			t.Errorf("last error %v, want the read error (unexpected EOF)", last)
		}
	})
	t.Run("bad header", func(t *testing.T) {
		if _, err := NewReader(bytes.NewReader([]byte{0x1f, 0x8b, 0, 0})); err == nil {
			t.Error("a corrupt gzip header was accepted")
		}
	})
}

// TestSkipDoesNotAllocate: with the per-request fields skipped, decoding
// an audit line allocates nothing (the strings that repeat are interned).
func TestSkipDoesNotAllocate(t *testing.T) {
	var buf bytes.Buffer
	New(&buf).Log(fullWhatif())
	line := bytes.TrimSpace(buf.Bytes())
	d := NewDecoder()
	d.Skip(FieldID, FieldClient, FieldPath, FieldAddr, FieldError)
	var e Entry
	if err := d.Decode(line, &e); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if err := d.Decode(line, &e); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per line, want 0", allocs)
	}
	if e.ID != "" || e.Client != "" || e.Path != "" || e.Host == "" || e.Service != "line" || len(e.PartTypes) != 2 {
		t.Errorf("skip decoded the wrong fields: %+v", e.Record)
	}
}

// FuzzDecode: the decoder never panics, and what it accepts as strings
// agrees with encoding/json.
func FuzzDecode(f *testing.F) {
	var buf bytes.Buffer
	New(&buf).Log(fullWhatif())
	f.Add(bytes.TrimSpace(buf.Bytes()))
	f.Add([]byte(`{"time":"2026-06-18T01:11:12Z","kind":"request","host":"\u00e9\ud83d\ude00","x":[{"y":"]"}]}`))
	f.Add([]byte(`{"time":"2026-06-18T01:11:12Z","kind":"k","part_types":["a","b"],"port":1}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		var e Entry
		if err := NewDecoder().Decode(line, &e); err != nil {
			return
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			return // the decoder is more lenient in places (duplicate keys, bad UTF-8)
		}
		if !utf8.Valid(line) {
			return // encoding/json replaces bad bytes; the decoder keeps them
		}
		for k, got := range map[string]string{FieldKind: e.Kind, FieldHost: e.Host, FieldPath: e.Path, FieldService: e.Service} {
			if want, ok := m[k].(string); ok && want != got {
				t.Errorf("%s: decoder %q, encoding/json %q", k, got, want)
			}
		}
	})
}

// benchLines is a realistic mix of audit lines as the proxy writes them.
func benchLines(n int) []byte {
	var buf bytes.Buffer
	l := New(&buf)
	services := []string{"line", "slack", "google-drive", "dropbox", "other", "city-chat"}
	countries := []string{"JP", "KR", "CN", "US", "internal", "unknown"}
	for i := range n {
		r := Record{
			ID: fmt.Sprintf("01J%013d", i), Kind: KindRequest, Client: fmt.Sprintf("10.1.%d.%d:%d", i%7, i%250, 40000+i%20000),
			ClientGroup: []string{"welfare", "tax", "other"}[i%3], Method: []string{"GET", "POST", "GET", "PUT"}[i%4],
			Scheme: "https", Host: fmt.Sprintf("h%d.%s.example", i%50, services[i%6]), Port: 443,
			Path: fmt.Sprintf("/api/v1/items/%d", i), Addr: fmt.Sprintf("203.0.113.%d:443", i%200),
			Country: countries[i%6], Effective: countries[(i+1)%6], Destination: "foreign", ASN: 64500,
			Service: services[i%6], Rule: "block-foreign-uploads", Action: []string{"allow", "block", "log"}[i%3],
			Mode: "inspected", BodyBytes: int64(i % 100000), ContentType: "multipart/form-data", FileParts: "yes",
			PartTypes: []string{"image/jpeg"}, UploadBytes: int64(i % 70000), DownloadBytes: int64(i * 13 % 1000000),
			Status: 200, Duration: time.Duration(i%5000) * time.Millisecond, RulesHash: "0123456789ab",
		}
		if i%5 == 0 {
			r.Kind, r.Mode, r.Method, r.Path, r.BodyBytes, r.ContentType, r.FileParts, r.PartTypes = KindTunnel, "tunnel", "CONNECT", "", 0, "", "", nil
			r.Budget, r.Stream = 1<<20, true
		}
		l.Log(&r)
	}
	return buf.Bytes()
}

// benchmarkReader reads data (n lines, plain bytes) b.N times.
func benchmarkReader(b *testing.B, data []byte, n int, plain int64, skip bool) {
	b.SetBytes(plain)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		rd, err := NewReader(bytes.NewReader(data))
		if err != nil {
			b.Fatal(err)
		}
		if skip {
			rd.Skip(FieldID, FieldClient, FieldPath, FieldAddr, FieldError)
		}
		var e Entry
		for {
			err := rd.Next(&e)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

// BenchmarkReader measures decoding audit lines (about 600 bytes each).
func BenchmarkReader(b *testing.B) {
	const n = 20000
	data := benchLines(n)
	size := int64(len(data))
	b.Run("all-fields", func(b *testing.B) { benchmarkReader(b, data, n, size, false) })
	b.Run("report-fields", func(b *testing.B) { benchmarkReader(b, data, n, size, true) })
	var zbuf bytes.Buffer
	zw := gzip.NewWriter(&zbuf)
	_, _ = zw.Write(data)
	_ = zw.Close()
	b.Run("gzip", func(b *testing.B) { benchmarkReader(b, zbuf.Bytes(), n, size, true) })
	b.Run("encoding-json", func(b *testing.B) { // for comparison
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for range b.N {
			dec := json.NewDecoder(bytes.NewReader(data))
			var v struct {
				Time    time.Time `json:"time"`
				Kind    string    `json:"kind"`
				Service string    `json:"service"`
				Country string    `json:"country"`
				Up      int64     `json:"upload_bytes"`
			}
			for dec.More() {
				if err := dec.Decode(&v); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
	})
}

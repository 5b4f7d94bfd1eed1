package audit

import (
	"bytes"
	"encoding/json"
	"io"
	"sync"
	"testing"
	"time"
)

func TestQuoteRoundTrip(t *testing.T) {
	for _, s := range []string{"plain", "quo\"te", `back\slash`, "nl\nx", "ctl\x01\x1f", "日本語", "bad\xffutf8", "<>&", ""} {
		var buf bytes.Buffer
		l := New(&buf)
		l.Log(&Record{ID: s, Kind: KindRequest, Host: s, Path: s})
		var v map[string]any
		if err := json.Unmarshal(buf.Bytes(), &v); err != nil {
			t.Fatalf("%q: %v\n%s", s, err, buf.String())
		}
		want := s
		if s == "bad\xffutf8" {
			want = "bad\ufffdutf8"
		}
		if v["id"] != want {
			t.Errorf("%q round-trips as %q", s, v["id"])
		}
	}
}

// BenchmarkLog is the audit line of a typical request: one per request, so
// it must stay cheap (and allocation-free).
func BenchmarkLog(b *testing.B) {
	l := New(io.Discard)
	r := &Record{ID: "a1b2c3d4-0000002a", Kind: KindRequest, Client: "10.1.2.3:51234", ClientGroup: "welfare", Method: "GET", Scheme: "http", Host: "www.example.co.jp", Port: 80, Path: "/index.html", Addr: "203.0.113.7:80", Country: "JP", Effective: "JP", Destination: "domestic", Service: "other", Rule: "default", Action: "allow", Mode: "http", DownloadBytes: 5120, Status: 200, Duration: 1234 * time.Microsecond, RulesHash: "7956934fef19"}
	b.ReportAllocs()
	for b.Loop() {
		l.Log(r)
	}
}

func TestLogDoesNotAllocate(t *testing.T) {
	l := New(io.Discard)
	r := &Record{ID: "x", Kind: KindRequest, Host: "example.com", PartTypes: []string{"image/png"}}
	l.Log(r)
	if n := testing.AllocsPerRun(100, func() { l.Log(r) }); n != 0 {
		t.Errorf("Log allocates %v times per line", n)
	}
}

func TestBufferedLoggerFlushes(t *testing.T) {
	var mu syncBuffer
	l := NewBuffered(&mu, 20*time.Millisecond)
	l.Log(&Record{ID: "one", Kind: KindRequest})
	if mu.Len() != 0 {
		t.Fatal("a buffered line was written at once")
	}
	deadline := time.Now().Add(2 * time.Second)
	for mu.Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the flusher did not write the line")
		}
		time.Sleep(5 * time.Millisecond)
	}
	l.Log(&Record{ID: "two", Kind: KindRequest})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(mu.Bytes(), []byte(`"id":"two"`)) {
		t.Fatal("Close did not flush")
	}
	l.Log(&Record{ID: "three", Kind: KindRequest}) // after Close: unbuffered
	if !bytes.Contains(mu.Bytes(), []byte(`"id":"three"`)) {
		t.Fatal("a line after Close was lost")
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Len()
}

func (s *syncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.buf.Bytes()...)
}

package framing

import (
	"net"
	"strconv"
	"strings"
	"testing"
)

// loopConn serves data over and over, like a client that never stops
// sending the same requests.
type loopConn struct {
	net.Conn
	data []byte
	off  int
}

func (l *loopConn) Read(p []byte) (int, error) {
	n := copy(p, l.data[l.off:])
	l.off += n
	if l.off == len(l.data) {
		l.off = 0
	}
	return n, nil
}

// readStream reads len(data) bytes from r in reads of at most len(buf).
func readStream(tb testing.TB, r interface{ Read([]byte) (int, error) }, buf []byte, total int) {
	for total > 0 {
		n, err := r.Read(buf[:min(len(buf), total)])
		if err != nil {
			tb.Fatal(err)
		}
		total -= n
	}
}

func clStream() []byte {
	body := strings.Repeat("x", 1<<20)
	return []byte("POST /upload HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\nContent-Type: application/octet-stream\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}

func chunkedStream() []byte {
	var b strings.Builder
	b.WriteString("POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n")
	chunk := strings.Repeat("x", 8<<10)
	for range 128 { // 1 MiB in 8 KiB chunks
		b.WriteString("2000\r\n" + chunk + "\r\n")
	}
	b.WriteString("0\r\n\r\n")
	return []byte(b.String())
}

func getsStream() []byte {
	var b strings.Builder
	for i := range 100 {
		b.WriteString("GET http://example.com/path/" + strconv.Itoa(i) + "?q=1 HTTP/1.1\r\nHost: example.com\r\n" +
			"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
			"Accept: text/html,application/xhtml+xml\r\nAccept-Encoding: gzip, deflate, br\r\n" +
			"Accept-Language: ja,en;q=0.8\r\nConnection: keep-alive\r\n\r\n")
	}
	return []byte(b.String())
}

var benchStreams = []struct {
	name string
	data func() []byte
	// heads per pass, to check that the scanner kept up.
	heads int
}{
	{"ContentLength1MiB", clStream, 1},
	{"Chunked1MiB", chunkedStream, 1},
	{"PipelinedGETs100", getsStream, 100},
}

// BenchmarkRead measures one pass over each stream in 32 KiB reads,
// through a Conn (Scan) and straight from the source (Raw) for reference.
func BenchmarkRead(b *testing.B) {
	for _, s := range benchStreams {
		data := s.data()
		b.Run(s.name+"/Scan", func(b *testing.B) {
			c := NewConn(&loopConn{data: data})
			buf := make([]byte, 32<<10)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				readStream(b, c, buf, len(data))
			}
			if c.s.state == stStopped {
				b.Fatalf("scanner stopped: %s", c.s.stopWhy)
			}
		})
		b.Run(s.name+"/Raw", func(b *testing.B) {
			c := &loopConn{data: data}
			buf := make([]byte, 32<<10)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				readStream(b, c, buf, len(data))
			}
		})
	}
}

// TestSteadyStateAllocs: no allocation per Read once a Conn exists, and
// the scanner keeps up with the stream.
func TestSteadyStateAllocs(t *testing.T) {
	for _, s := range benchStreams {
		t.Run(s.name, func(t *testing.T) {
			data := s.data()
			c := NewConn(&loopConn{data: data})
			buf := make([]byte, 32<<10)
			const passes = 5
			allocs := testing.AllocsPerRun(passes, func() { readStream(t, c, buf, len(data)) })
			if allocs != 0 {
				t.Errorf("%v allocations per pass, want 0", allocs)
			}
			// AllocsPerRun makes one warm-up run.
			if want := uint64((passes + 1) * s.heads); c.s.heads != want || c.s.state == stStopped {
				t.Errorf("heads = %d, want %d (stopped: %q)", c.s.heads, want, c.s.stopWhy)
			}
		})
	}
}

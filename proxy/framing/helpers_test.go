package framing

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
)

// chunkConn is a net.Conn whose Reads return the given chunks one by one,
// then io.EOF. Only Read is implemented.
type chunkConn struct {
	net.Conn
	chunks [][]byte
}

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	c.chunks[0] = c.chunks[0][n:]
	if len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	return n, nil
}

type headRec struct {
	ordinal uint64
	start   int64
}

// scanResult is what a Conn made of one stream.
type scanResult struct {
	c     *Conn
	heads []headRec
}

// scanChunks reads chunks through a Conn and checks that Read returned
// exactly the input.
func scanChunks(chunks [][]byte) (scanResult, error) {
	var in []byte
	cc := &chunkConn{}
	for _, ch := range chunks {
		in = append(in, ch...)
		cc.chunks = append(cc.chunks, bytes.Clone(ch))
	}
	var r scanResult
	r.c = NewConn(cc)
	r.c.s.onHead = func(ord uint64, start int64) { r.heads = append(r.heads, headRec{ord, start}) }
	out, err := io.ReadAll(r.c)
	if err != nil {
		return r, fmt.Errorf("ReadAll: %w", err)
	}
	if !bytes.Equal(out, in) {
		return r, fmt.Errorf("Read changed the stream:\n got %q\nwant %q", out, in)
	}
	if got := r.c.s.heads; got != uint64(len(r.heads)) {
		return r, fmt.Errorf("heads = %d, onHead called %d times", got, len(r.heads))
	}
	for i, h := range r.heads {
		if h.ordinal != uint64(i+1) {
			return r, fmt.Errorf("head %d reported as ordinal %d", i+1, h.ordinal)
		}
	}
	return r, nil
}

// problems calls Next n times.
func problems(c *Conn, n int) []Problem {
	ps := make([]Problem, n)
	for i := range ps {
		ps[i] = c.Next()
	}
	return ps
}

func randomSplit(in []byte, rng *rand.Rand) [][]byte {
	var chunks [][]byte
	for len(in) > 0 {
		var n int
		switch rng.IntN(4) {
		case 0:
			n = 1
		case 1:
			n = 1 + rng.IntN(8)
		case 2:
			n = 1 + rng.IntN(64)
		default:
			n = 1 + rng.IntN(4096)
		}
		n = min(n, len(in))
		chunks = append(chunks, in[:n])
		in = in[n:]
	}
	return chunks
}

// goRequest is a request that net/http's server would hand to a handler.
type goRequest struct {
	start  int64 // stream offset of its request line
	method string
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// goRequests parses in the way (*http.conn).serve does and returns the
// requests that would reach the handler, in order, up to the first one
// after which the server would stop reading requests. It is an oracle for
// framing: it skips the checks the server makes that do not affect framing
// (Host, Expect, header name characters), so it accepts a little more than
// the server does, which only makes the comparison stricter.
func goRequests(in []byte) []goRequest {
	cr := &countingReader{r: bytes.NewReader(in)}
	br := bufio.NewReaderSize(cr, 4096) // the server's bufio.Reader size
	var out []goRequest
	last := ""
	for {
		if last == "POST" { // (*conn).readRequest
			peek, _ := br.Peek(4)
			n := 0
			for n < len(peek) && (peek[n] == '\r' || peek[n] == '\n') {
				n++
			}
			br.Discard(n)
		}
		start := cr.n - int64(br.Buffered())
		req, err := http.ReadRequest(br)
		if err != nil {
			return out
		}
		switch {
		case req.ProtoMajor == 1:
		case req.ProtoMajor == 2 && req.ProtoMinor == 0 && req.Method == "PRI" && req.RequestURI == "*":
		default:
			return out // http1ServerSupportsRequest: 505
		}
		out = append(out, goRequest{start: start, method: req.Method})
		last = req.Method
		if req.Method == "CONNECT" {
			return out // the handler hijacks
		}
		if _, err := io.Copy(io.Discard, req.Body); err != nil {
			return out // the server closes after a body error
		}
		req.Body.Close()
	}
}

// compareWithGo checks the property that matters: for every request
// net/http would hand to the handler (goReqs, from goRequests), the scanner
// counted a head that starts at the same offset, unless it had already
// stopped on purpose (a Problem at an earlier request, or a CONNECT). So
// ordinals never drift, and no request that net/http accepts can switch
// the check off.
func compareWithGo(goReqs []goRequest, r scanResult) error {
	rec := r.c.s.rec.Load()
	probOrd := rec >> 8
	for i, g := range goReqs {
		ord := uint64(i + 1)
		if i < len(r.heads) {
			if r.heads[i].start != g.start {
				return fmt.Errorf("request %d: scanner head at offset %d, net/http request at %d",
					ord, r.heads[i].start, g.start)
			}
			continue
		}
		if rec != 0 && probOrd < ord {
			return nil // stopped on a Problem: the handler closes the connection
		}
		if r.c.s.stopWhy == "CONNECT" {
			return nil
		}
		return fmt.Errorf("net/http accepts request %d (%s at offset %d) but the scanner counted %d heads and stopped (%q)",
			ord, g.method, g.start, len(r.heads), r.c.s.stopWhy)
	}
	return nil
}

// entropy feeds the generator from the fuzz input first, then from a PRNG,
// so that the fuzzer's mutations steer it.
type entropy struct {
	data []byte
	rng  *rand.Rand
}

func (e *entropy) intn(n int) int {
	if n <= 1 {
		return 0
	}
	if len(e.data) > 0 {
		b := e.data[0]
		e.data = e.data[1:]
		return int(b) % n
	}
	return e.rng.IntN(n)
}

func (e *entropy) pick(s ...string) string { return s[e.intn(len(s))] }

func (e *entropy) bytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(e.intn(256))
	}
	return b
}

// genRequests builds a stream of n well-formed requests that net/http
// accepts, none with a framing Problem, using the variations net/http
// tolerates: any header case, padded values, equal duplicate
// Content-Lengths, bare-LF header lines, chunk extensions, trailing blanks
// and leading zeros in chunk sizes, trailers (even ended by a bare LF), the
// CR/LF bytes net/http skips after a POST, HTTP/1.0 keep-alive, HTTP/1.9.
func genRequests(e *entropy, n int) []byte {
	type req struct {
		head, body []byte
		crlfHead   bool
		chunked    bool
		method     string
	}
	reqs := make([]req, n)
	for i := range reqs {
		r := &reqs[i]
		r.method = e.pick("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "X-M!#~", "post", "PROPFIND")
		nl := "\r\n"
		r.crlfHead = e.intn(4) != 0
		if !r.crlfHead {
			nl = "\n"
		}
		proto := e.pick("HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/1.9")
		target := e.pick("/", "/a/b?c=d", "http://example.com/x", "/"+strings.Repeat("p", e.intn(3)*3000))
		var h strings.Builder
		h.WriteString(r.method + " " + target + " " + proto + nl)
		h.WriteString(e.pick("Host", "host", "HOST") + ": example.com" + nl)
		if proto == "HTTP/1.0" {
			h.WriteString("Connection: keep-alive" + nl)
		}
		for range e.intn(4) {
			h.WriteString(e.pick("Accept", "X-Content-Length", "Content-Type", "X-Transfer-Encoding", "Cookie", "Upgrade", "Content-Lengths") +
				":" + e.pick("", " ", "\t") + e.pick("x", "chunked", "5", strings.Repeat("v", e.intn(2)*5000)) + nl)
		}
		switch body := e.intn(3); {
		case body == 1 || (body == 2 && proto == "HTTP/1.0"): // Content-Length
			data := e.bytes(e.intn(300))
			if e.intn(4) == 0 {
				data = []byte("GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
			}
			cl := strings.Repeat("0", e.intn(2)*3) + strconv.Itoa(len(data))
			name := e.pick("Content-Length", "content-length", "CONTENT-LENGTH")
			pad := e.pick("", " ", "  \t")
			h.WriteString(name + ":" + pad + cl + pad + nl)
			if e.intn(4) == 0 {
				h.WriteString(name + ": " + cl + nl) // equal duplicate
			}
			r.body = data
		case body == 2: // chunked
			r.chunked = true
			h.WriteString(e.pick("Transfer-Encoding", "transfer-encoding") + ":" + e.pick(" chunked", "chunked", " Chunked \t", "CHUNKED") + nl)
			var b bytes.Buffer
			for range e.intn(5) {
				data := e.bytes(1 + e.intn(200))
				zeros := strings.Repeat("0", e.intn(3))
				b.WriteString(zeros + fmt.Sprintf(e.pick("%x", "%X"), len(data)))
				b.WriteString(e.pick("", " ", "\t ", ";ext", ";a=b;c=\"d e\"", "; x  "))
				b.WriteString("\r\n")
				b.Write(data)
				b.WriteString("\r\n")
			}
			b.WriteString("0" + e.pick("", ";last") + "\r\n")
			for range e.intn(3) {
				b.WriteString(e.pick("X-Trailer: 1", "Checksum: abc", "Content-Length: 7") + "\r\n")
			}
			r.body = b.Bytes()
		}
		h.WriteString(nl)
		r.head = []byte(h.String())
	}
	var out []byte
	for i, r := range reqs {
		out = append(out, r.head...)
		out = append(out, r.body...)
		if r.chunked {
			// A bare LF may end the trailer section when net/http can
			// peek a "\r\n\r\n" within its 4096-byte buffer.
			if i+1 < len(reqs) && reqs[i+1].crlfHead && len(reqs[i+1].head) < 3000 && e.intn(3) == 0 {
				out = append(out, '\n')
			} else {
				out = append(out, "\r\n"...)
			}
		}
		if r.method == "POST" && i+1 < len(reqs) {
			out = append(out, e.pick("", "\r\n", "\n", "\r\n\r\n", "\n\n\r")...)
		}
	}
	return out
}

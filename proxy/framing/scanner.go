package framing

import (
	"bytes"
	"sync/atomic"
)

// The scanner follows net/http's server parser (Go 1.26):
//
//   - net/http/server.go   (*conn).readRequest, numLeadingCRorLF
//   - net/http/request.go  readRequest, parseRequestLine, ParseHTTPVersion
//   - net/textproto        readLineSlice, readMIMEHeader, readContinuedLineSlice
//   - net/http/transfer.go parseTransferEncoding, fixLength, parseContentLength,
//     (*body).readTrailer
//   - net/http/internal/chunked.go
//
// Rule of thumb: it must agree with net/http on every request net/http
// accepts (otherwise the ordinals drift or the check can be switched off),
// and it may accept more than net/http does, because net/http closes the
// connection after every request it rejects.

type state uint8

// The zero state, stRequestLine, is where a connection starts.
const (
	stRequestLine state = iota // at or inside a request line
	stHeader                   // inside the header section
	stBody                     // skipping remain bytes of a Content-Length body
	stChunkSize                // inside a chunk-size line
	stChunkData                // skipping remain bytes of chunk data
	stChunkCR                  // expecting the CR that ends chunk data
	stChunkLF                  // expecting the LF that ends chunk data
	stTrailer                  // inside the trailer section of a chunked body
	stLead                     // after a POST: net/http skips up to 4 CR/LF bytes
	stStopped                  // pass-through for good
)

const (
	preCap  = 128 // bytes kept from the start of a line split across reads
	tailCap = 16  // bytes kept from its end (the request line's " HTTP/1.1")

	// net/http reads chunk-size lines with bufio.Reader.ReadSlice on its
	// 4096-byte buffer: the line, CRLF included, must fit.
	maxChunkLine = 4096
	// net/http gives up when chunk overhead outgrows the data by this much.
	maxChunkExcess = 16 * 1024
	// After a POST, net/http discards the CR and LF bytes among the next 4
	// ("RFC 7230 section 3 tolerance for old buggy clients").
	maxLead = 4
)

type method uint8

const (
	methodOther method = iota
	methodPOST
	methodCONNECT
)

// Chunk-size line phases: hex digits, blanks after them, extension, CR seen.
const (
	csHex uint8 = iota
	csBlank
	csExt
	csCR
)

type scanner struct {
	// rec is ordinal<<8 | Problem for the first request with a Problem, or
	// 0. It is written once by Read and read by Next, which may run on
	// another goroutine (net/http's background read).
	rec atomic.Uint64

	state state
	heads uint64 // request heads seen in full; the ordinal of the last one

	// The line being assembled when it is split across reads.
	n    int // its length so far, LF excluded
	pre  [preCap]byte
	tail [tailCap]byte

	// The request being scanned.
	method  method
	http10  bool
	clCount int
	clValue uint64
	clLen   int // length of the first Content-Length value, in digits
	clBad   bool
	teCount int
	teBad   bool

	remain uint64 // body or chunk bytes still to skip
	lead   int    // CR/LF bytes that may still be skipped after a POST

	// The chunk-size line being parsed.
	csPhase  uint8
	csDigits int
	csSize   uint64
	csLen    int   // bytes so far, LF excluded
	excess   int64 // net/http's chunk overhead accounting, per body

	// For tests and debugging.
	stopWhy string                            // why scanning stopped
	base    int64                             // stream offset just past the slice being scanned
	start   int64                             // stream offset of the current request line
	onHead  func(ordinal uint64, start int64) // called as each head is counted
}

func (s *scanner) stop(why string) {
	s.state = stStopped
	s.stopWhy = why
}

// fail records p for the current request and stops: the handler answers 400
// and closes the connection, so nothing after it needs scanning.
func (s *scanner) fail(p Problem) {
	s.rec.Store(s.heads<<8 | uint64(p))
	s.stop(p.String())
}

// scan consumes b, the bytes one Read returned.
func (s *scanner) scan(b []byte) {
	s.base += int64(len(b))
	for len(b) > 0 && s.state != stStopped {
		switch s.state {
		case stBody, stChunkData:
			if uint64(len(b)) < s.remain {
				s.remain -= uint64(len(b))
				return
			}
			b = b[s.remain:]
			s.remain = 0
			if s.state == stBody {
				s.endRequest()
			} else {
				s.state = stChunkCR
			}
		case stChunkCR:
			// net/http reads two bytes and requires exactly "\r\n".
			if b[0] != '\r' {
				s.stop("chunk data not followed by CRLF")
				return
			}
			b = b[1:]
			s.state = stChunkLF
		case stChunkLF:
			if b[0] != '\n' {
				s.stop("chunk data not followed by CRLF")
				return
			}
			b = b[1:]
			s.startChunk()
		case stChunkSize:
			b = s.chunkSize(b)
		case stLead:
			for s.lead > 0 && len(b) > 0 && (b[0] == '\r' || b[0] == '\n') {
				b = b[1:]
				s.lead--
			}
			if s.lead == 0 || len(b) > 0 {
				s.state = stRequestLine
			}
		default: // stRequestLine, stHeader, stTrailer
			b = s.lineStep(b)
		}
	}
}

// line is one line, LF excluded: either all of it (pre holds n bytes) or,
// when it was split across reads and is longer than preCap, its first
// preCap and last tailCap bytes.
type line struct {
	pre  []byte
	tail []byte
	n    int
}

func (l *line) whole() bool { return len(l.pre) == l.n }

// trimCR drops one CR before the LF, as bufio.Reader.ReadLine does.
func (l *line) trimCR() {
	if l.n > 0 && l.tail[len(l.tail)-1] == '\r' {
		l.n--
		l.tail = l.tail[:len(l.tail)-1]
		if len(l.pre) > l.n {
			l.pre = l.pre[:l.n]
		}
	}
}

// suffix returns the last k bytes; k <= tailCap-1 and k <= n.
func (l *line) suffix(k int) []byte {
	if l.whole() {
		return l.pre[l.n-k:]
	}
	return l.tail[len(l.tail)-k:]
}

// lineStep consumes up to and including the next LF and handles that line,
// or keeps what it needs of a partial line. It returns what is left of b.
func (s *scanner) lineStep(b []byte) []byte {
	if s.n == 0 && s.state == stRequestLine {
		s.start = s.base - int64(len(b))
	}
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		s.add(b)
		return nil
	}
	var l line
	if s.n == 0 {
		p := b[:i]
		l = line{pre: p, tail: p[max(0, len(p)-tailCap):], n: len(p)}
	} else {
		s.add(b[:i])
		l = line{pre: s.pre[:min(s.n, preCap)], tail: s.tail[tailCap-min(s.n, tailCap):], n: s.n}
		s.n = 0
	}
	l.trimCR()
	switch s.state {
	case stRequestLine:
		s.requestLine(&l)
	case stHeader:
		s.headerLine(&l)
	case stTrailer:
		// Trailer lines do not change framing, and a Problem found now
		// would come after the handler has already asked. net/http reads
		// them with textproto.Reader.ReadMIMEHeader, which ends at the
		// first empty line, CRLF or bare LF. (It also wants "\r\n\r\n"
		// within 4096 bytes and valid header lines; when they are missing
		// it fails the body and closes the connection, so we need not
		// check.)
		if l.n == 0 {
			s.endRequest()
		}
	}
	return b[i+1:]
}

// add appends part of a line that is split across reads.
func (s *scanner) add(p []byte) {
	if s.n < preCap {
		copy(s.pre[s.n:], p)
	}
	if len(p) >= tailCap {
		copy(s.tail[:], p[len(p)-tailCap:])
	} else {
		copy(s.tail[:], s.tail[len(p):])
		copy(s.tail[tailCap-len(p):], p)
	}
	s.n += len(p)
}

// requestLine checks "METHOD SP request-target SP HTTP/x.y" as far as
// framing needs: the method (token, POST, CONNECT) and the version.
func (s *scanner) requestLine(l *line) {
	if l.n == 0 {
		s.stop("empty request line")
		return
	}
	// Look at the first preCap bytes only, whether or not the line came in
	// one read, so that the outcome never depends on how it was split.
	m := l.pre[:min(len(l.pre), preCap)]
	if sp := bytes.IndexByte(m, ' '); sp >= 0 {
		m = m[:sp]
	} else if l.n <= preCap {
		s.stop("request line without spaces")
		return
	}
	if len(m) == 0 || !isToken(m) {
		s.stop("invalid method")
		return
	}
	// net/http's ParseHTTPVersion takes "HTTP/" digit "." digit after the
	// second space; an accepted line therefore ends in " HTTP/d.d".
	if l.n < 10 {
		s.stop("malformed request line")
		return
	}
	v := l.suffix(9)
	if v[0] != ' ' || string(v[1:6]) != "HTTP/" || !isDigit(v[6]) || v[7] != '.' || !isDigit(v[8]) {
		s.stop("malformed HTTP version")
		return
	}
	switch {
	case v[6] == '1': // HTTP/1.0 to HTTP/1.9; all but 1.0 count as 1.1
		s.http10 = v[8] == '0'
	case l.whole() && string(l.pre) == "PRI * HTTP/2.0":
		// net/http hands this to the handler (h2c prior knowledge); with
		// headers the connection can even carry on as HTTP/1.1.
		s.http10 = false
	default:
		s.stop("unsupported HTTP version") // net/http answers 505
		return
	}
	switch string(m) {
	case "POST":
		s.method = methodPOST
	case "CONNECT":
		s.method = methodCONNECT
	default:
		s.method = methodOther
	}
	s.clCount, s.clValue, s.clLen, s.clBad = 0, 0, 0, false
	s.teCount, s.teBad = 0, false
	s.state = stHeader
}

// headerLine handles one header line, or the empty line that ends the head.
func (s *scanner) headerLine(l *line) {
	if l.n == 0 {
		s.endHead()
		return
	}
	// A first header line that starts with a blank is rejected by
	// net/http; later ones are joined to the line before. Either way the
	// request is not one we want.
	if c := l.pre[0]; c == ' ' || c == '\t' {
		s.countHead()
		s.fail(ObsoleteLineFolding)
		return
	}
	// Content-Length and Transfer-Encoding lines longer than preCap are
	// refused whether or not they came in one read: only absurd padding
	// makes them that long, and the outcome must not depend on the split.
	const cl, te = "content-length:", "transfer-encoding:"
	switch {
	case hasPrefixFold(l.pre, cl):
		s.clCount++
		if l.n > preCap {
			s.clBad = true
			return
		}
		v := trimBlanks(l.pre[len(cl):])
		n, ok := parseContentLength(v)
		switch {
		case !ok:
			s.clBad = true
		case s.clCount == 1:
			s.clValue, s.clLen = n, len(v)
		case n != s.clValue || len(v) != s.clLen:
			// net/http compares the trimmed strings; two valid
			// digit strings are equal iff value and length are.
			s.clBad = true
		}
	case hasPrefixFold(l.pre, te):
		s.teCount++
		if l.n > preCap || !equalFold(trimBlanks(l.pre[len(te):]), "chunked") {
			s.teBad = true
		}
	}
}

// endHead decides the request's Problem and its body framing.
func (s *scanner) endHead() {
	s.countHead()
	var p Problem
	switch {
	case s.clCount > 0 && s.teCount > 0:
		p = ContentLengthWithTransferEncoding
	case s.teCount > 0 && s.http10:
		p = TransferEncodingHTTP10
	case s.teCount > 1 || s.teBad:
		p = UnsupportedTransferEncoding
	case s.clBad:
		p = ConflictingContentLength
	}
	if p != None {
		s.fail(p)
		return
	}
	switch {
	case s.method == methodCONNECT:
		s.stop("CONNECT") // goproxy hijacks: what follows is tunnel data
	case s.teCount > 0:
		s.excess = 0
		s.startChunk()
	case s.clValue > 0:
		s.remain = s.clValue
		s.state = stBody
	default:
		s.endRequest()
	}
}

func (s *scanner) countHead() {
	s.heads++
	if s.onHead != nil {
		s.onHead(s.heads, s.start)
	}
}

func (s *scanner) endRequest() {
	if s.method == methodPOST {
		s.lead = maxLead
		s.state = stLead
		return
	}
	s.state = stRequestLine
}

func (s *scanner) startChunk() {
	s.state = stChunkSize
	s.csPhase, s.csDigits, s.csSize, s.csLen = csHex, 0, 0, 0
}

// chunkSize parses a chunk-size line byte by byte, exactly as
// net/http/internal/chunked.go accepts it: it must end in CRLF with no
// other CR; trailing blanks are trimmed first, then anything from the
// first ';' on (the extension) is dropped, and what remains must be 1 to 16
// hex digits. So "5 \r\n" and "5;x y \r\n" are fine, " 5", "5 ;x" and "5\n"
// are not.
func (s *scanner) chunkSize(b []byte) []byte {
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c == '\n' {
			if s.csPhase != csCR {
				s.stop("chunk-size line ends in bare LF")
				return nil
			}
			s.endChunkLine()
			return b[i+1:]
		}
		if s.csPhase == csCR {
			s.stop("CR inside chunk-size line")
			return nil
		}
		s.csLen++
		if s.csLen >= maxChunkLine {
			s.stop("chunk-size line too long")
			return nil
		}
		switch s.csPhase {
		case csHex:
			if v, ok := unhex(c); ok {
				if s.csDigits == 16 {
					s.stop("chunk size too large")
					return nil
				}
				s.csSize = s.csSize<<4 | uint64(v)
				s.csDigits++
				continue
			}
			if s.csDigits == 0 {
				s.stop("invalid chunk size")
				return nil
			}
			switch c {
			case ';':
				s.csPhase = csExt
			case ' ', '\t':
				s.csPhase = csBlank
			case '\r':
				s.csPhase = csCR
			default:
				s.stop("invalid chunk size")
				return nil
			}
		case csBlank:
			switch c {
			case ' ', '\t':
			case '\r':
				s.csPhase = csCR
			default:
				s.stop("invalid chunk size")
				return nil
			}
		case csExt:
			if c == '\r' {
				s.csPhase = csCR
			}
		}
	}
	return nil
}

func (s *scanner) endChunkLine() {
	// Mirrors chunkedReader.beginChunk, wrap-around included.
	s.excess += int64(s.csLen-1) + 2
	s.excess -= 16 + (2 * int64(s.csSize))
	s.excess = max(s.excess, 0)
	if s.excess > maxChunkExcess {
		s.stop("chunked encoding contains too much non-data")
		return
	}
	if s.csSize == 0 {
		s.state = stTrailer
		return
	}
	s.remain = s.csSize
	s.state = stChunkData
}

// parseContentLength accepts what strconv.ParseUint(v, 10, 63) accepts.
func parseContentLength(v []byte) (uint64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	const limit = 1<<63 - 1
	var n uint64
	for _, c := range v {
		if !isDigit(c) {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (limit-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

func trimBlanks(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}

// equalFold is ASCII-only, like net/http's internal/ascii.EqualFold; lower
// must be lower case.
func equalFold(b []byte, lowerStr string) bool {
	if len(b) != len(lowerStr) {
		return false
	}
	for i := range len(b) {
		if lower(b[i]) != lowerStr[i] {
			return false
		}
	}
	return true
}

func hasPrefixFold(b []byte, lowerPrefix string) bool {
	return len(b) >= len(lowerPrefix) && equalFold(b[:len(lowerPrefix)], lowerPrefix)
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// tokenTable is RFC 9110 tchar, the set net/http's validMethod accepts
// (httpguts.IsTokenRune).
var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isToken(b []byte) bool {
	for _, c := range b {
		if !tokenTable[c] {
			return false
		}
	}
	return true
}

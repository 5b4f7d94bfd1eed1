package framing

import (
	"fmt"
	"iter"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const (
	get = "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
	// clte is the request the check exists for.
	clte     = "POST /smuggle HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
	postCL   = "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world"
	chunkedH = "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
)

func head(lines ...string) string { return strings.Join(lines, "\r\n") + "\r\n\r\n" }

// req builds "POST / HTTP/1.1" with a Host header, the given header lines
// and body.
func req(proto string, hdr []string, body string) string {
	return head(append([]string{"POST / " + proto, "Host: a"}, hdr...)...) + body
}

type scanCase struct {
	name string
	in   string
	want []Problem // Next, request by request; later calls must give None
	// heads is how many request heads the scanner counts; scanning is
	// the scanner still running at the end of the input.
	heads    int
	scanning bool
	// goAccepts is how many requests net/http's parser hands on (see
	// goRequests): it pins down the net/http behaviour each case relies on.
	goAccepts int
}

var (
	N     = None
	CLTE  = ContentLengthWithTransferEncoding
	TE10  = TransferEncodingHTTP10
	UnsTE = UnsupportedTransferEncoding
	BadCL = ConflictingContentLength
	Fold  = ObsoleteLineFolding
)

var scanCases = []scanCase{
	// Clean traffic.
	{name: "clean GET", in: get, want: []Problem{N}, heads: 1, scanning: true, goAccepts: 1},
	{name: "three pipelined GETs", in: get + get + get, want: []Problem{N, N, N}, heads: 3, scanning: true, goAccepts: 3},
	{name: "Content-Length body", in: postCL + get, want: []Problem{N, N}, heads: 2, scanning: true, goAccepts: 2},
	{
		name: "Content-Length body that looks like a smuggled request",
		in:   req("HTTP/1.1", []string{"Content-Length: " + strconv.Itoa(len(clte))}, clte) + get,
		want: []Problem{N, N}, heads: 2, scanning: true, goAccepts: 2,
	},
	{
		name: "chunked body with extensions and trailers",
		in: chunkedH + "5;name=val\r\nhello\r\n6 \r\n world\r\nA;a=\"b c\";d\r\n0123456789\r\n" +
			"0000000000000010\r\n0123456789abcdef\r\n" + "0;last=1\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n" + get,
		want: []Problem{N, N}, heads: 2, scanning: true, goAccepts: 2,
	},
	{
		name: "chunk data that looks like a smuggled request",
		in:   chunkedH + strconv.FormatInt(int64(len(clte)), 16) + "\r\n" + clte + "\r\n0\r\n\r\n" + get,
		want: []Problem{N, N}, heads: 2, scanning: true, goAccepts: 2,
	},
	{
		name: "equal duplicate Content-Length",
		in:   req("HTTP/1.1", []string{"Content-Length: 5", "content-length:  5\t"}, "hello") + get,
		want: []Problem{N, N}, heads: 2, scanning: true, goAccepts: 2,
	},
	{
		name: "padded Chunked",
		in:   req("HTTP/1.1", []string{"Transfer-Encoding: \t Chunked \t"}, "0\r\n\r\n") + clte,
		want: []Problem{N, CLTE}, heads: 2, goAccepts: 2,
	},
	{
		name: "GET with chunked body",
		in:   head("GET / HTTP/1.1", "Host: a", "Transfer-Encoding: chunked") + "3\r\nabc\r\n0\r\n\r\n" + clte,
		want: []Problem{N, CLTE}, heads: 2, goAccepts: 2,
	},
	{
		name: "upper-case hex and zero-padded sizes",
		in:   chunkedH + "A\r\n0123456789\r\n000a\r\n0123456789\r\n00\r\n\r\n" + clte,
		want: []Problem{N, CLTE}, heads: 2, goAccepts: 2,
	},

	// Content-Length with Transfer-Encoding.
	{name: "CL then TE", in: req("HTTP/1.1", []string{"Content-Length: 5", "Transfer-Encoding: chunked"}, "0\r\n\r\n"), want: []Problem{CLTE}, heads: 1, goAccepts: 1},
	{name: "TE then CL", in: req("HTTP/1.1", []string{"Transfer-Encoding: chunked", "Content-Length: 5"}, "0\r\n\r\n"), want: []Problem{CLTE}, heads: 1, goAccepts: 1},
	{name: "CL+TE lower case", in: req("HTTP/1.1", []string{"content-length: 5", "transfer-encoding: chunked"}, "0\r\n\r\n"), want: []Problem{CLTE}, heads: 1, goAccepts: 1},
	{name: "CL+TE upper case", in: req("HTTP/1.1", []string{"TRANSFER-ENCODING: CHUNKED", "CONTENT-LENGTH: 5"}, "0\r\n\r\n"), want: []Problem{CLTE}, heads: 1, goAccepts: 1},
	{name: "CL+TE mixed case", in: req("HTTP/1.1", []string{"cOnTeNt-LeNgTh:5", "tRaNsFeR-eNcOdInG:cHuNkEd"}, "0\r\n\r\n"), want: []Problem{CLTE}, heads: 1, goAccepts: 1},
	{name: "CL 0 and TE", in: req("HTTP/1.1", []string{"Content-Length: 0", "Transfer-Encoding: chunked"}, "0\r\n\r\n"), want: []Problem{CLTE}, heads: 1, goAccepts: 1},
	{name: "CL and TE gzip", in: req("HTTP/1.1", []string{"Content-Length: 5", "Transfer-Encoding: gzip"}, "hello"), want: []Problem{CLTE}, heads: 1, goAccepts: 0},
	{name: "CL and TE on HTTP/1.0", in: req("HTTP/1.0", []string{"Content-Length: 5", "Transfer-Encoding: chunked"}, "hello"), want: []Problem{CLTE}, heads: 1, goAccepts: 1},
	{name: "pipelined clean then CL+TE", in: get + clte, want: []Problem{N, CLTE}, heads: 2, goAccepts: 2},
	{name: "Content-Length body then CL+TE", in: postCL + clte, want: []Problem{N, CLTE}, heads: 2, goAccepts: 2},
	{name: "chunked body then CL+TE", in: chunkedH + "5\r\nhello\r\n0\r\n\r\n" + clte, want: []Problem{N, CLTE}, heads: 2, goAccepts: 2},
	{name: "CL+TE then clean", in: clte + get, want: []Problem{CLTE, N}, heads: 1, goAccepts: 2},

	// Transfer-Encoding problems.
	{name: "HTTP/1.0 with TE chunked", in: req("HTTP/1.0", []string{"Transfer-Encoding: chunked"}, "0\r\n\r\n"), want: []Problem{TE10}, heads: 1, goAccepts: 1},
	{name: "HTTP/1.0 with TE gzip", in: req("HTTP/1.0", []string{"Transfer-Encoding: gzip"}, ""), want: []Problem{TE10}, heads: 1, goAccepts: 1},
	{name: "gzip, chunked", in: req("HTTP/1.1", []string{"Transfer-Encoding: gzip, chunked"}, "0\r\n\r\n"), want: []Problem{UnsTE}, heads: 1, goAccepts: 0},
	{name: "chunked, chunked", in: req("HTTP/1.1", []string{"Transfer-Encoding: chunked, chunked"}, "0\r\n\r\n"), want: []Problem{UnsTE}, heads: 1, goAccepts: 0},
	{name: "two TE lines", in: req("HTTP/1.1", []string{"Transfer-Encoding: chunked", "Transfer-Encoding: chunked"}, "0\r\n\r\n"), want: []Problem{UnsTE}, heads: 1, goAccepts: 0},
	{name: "TE identity", in: req("HTTP/1.1", []string{"Transfer-Encoding: identity"}, ""), want: []Problem{UnsTE}, heads: 1, goAccepts: 0},
	{name: "TE empty", in: req("HTTP/1.1", []string{"Transfer-Encoding:"}, ""), want: []Problem{UnsTE}, heads: 1, goAccepts: 0},
	{name: "TE chunked;q", in: req("HTTP/1.1", []string{"Transfer-Encoding: chunked;q=1"}, ""), want: []Problem{UnsTE}, heads: 1, goAccepts: 0},
	{name: "clean then gzip, chunked", in: get + req("HTTP/1.1", []string{"Transfer-Encoding: gzip, chunked"}, ""), want: []Problem{N, UnsTE}, heads: 2, goAccepts: 1},

	// Content-Length problems.
	{name: "differing CL", in: req("HTTP/1.1", []string{"Content-Length: 5", "Content-Length: 6"}, "hello!"), want: []Problem{BadCL}, heads: 1, goAccepts: 0},
	{name: "CL 5 and 05", in: req("HTTP/1.1", []string{"Content-Length: 5", "Content-Length: 05"}, "hello"), want: []Problem{BadCL}, heads: 1, goAccepts: 0},
	{name: "CL list", in: req("HTTP/1.1", []string{"Content-Length: 5, 5"}, "hello"), want: []Problem{BadCL}, heads: 1, goAccepts: 0},
	{name: "CL plus sign", in: req("HTTP/1.1", []string{"Content-Length: +5"}, "hello"), want: []Problem{BadCL}, heads: 1, goAccepts: 0},
	{name: "CL empty", in: req("HTTP/1.1", []string{"Content-Length:"}, ""), want: []Problem{BadCL}, heads: 1, goAccepts: 0},
	{name: "CL 2^63", in: req("HTTP/1.1", []string{"Content-Length: 9223372036854775808"}, ""), want: []Problem{BadCL}, heads: 1, goAccepts: 0},
	{name: "CL 2^63-1", in: req("HTTP/1.1", []string{"Content-Length: 9223372036854775807"}, "abc"), want: []Problem{N}, heads: 1, scanning: true, goAccepts: 1},
	{name: "CL hex", in: req("HTTP/1.1", []string{"Content-Length: 0x5"}, "hello"), want: []Problem{BadCL}, heads: 1, goAccepts: 0},

	// Obsolete line folding.
	{name: "obs-fold with space", in: head("GET / HTTP/1.1", "Host: a", "X-A: 1", "  2") + clte, want: []Problem{Fold}, heads: 1, goAccepts: 2},
	{name: "obs-fold with tab", in: head("GET / HTTP/1.1", "Host: a", "X-A: 1", "\t2"), want: []Problem{Fold}, heads: 1, goAccepts: 1},
	{name: "obs-fold hiding Transfer-Encoding", in: head("POST / HTTP/1.1", "Host: a", "Content-Length: 5", "X: y", " Transfer-Encoding: chunked") + "hello", want: []Problem{Fold}, heads: 1, goAccepts: 1},
	{name: "first header line folded", in: head("GET / HTTP/1.1", " Host: a"), want: []Problem{Fold}, heads: 1, goAccepts: 0},
	{name: "clean then obs-fold", in: get + head("GET / HTTP/1.1", "Host: a", "X: 1", " 2"), want: []Problem{N, Fold}, heads: 2, goAccepts: 2},

	// Line endings and blank lines as net/http takes them.
	{
		name: "bare LF line endings",
		in:   "GET / HTTP/1.1\nHost: a\n\n" + "POST / HTTP/1.1\nHost: a\nContent-Length: 5\nTransfer-Encoding: chunked\n\n0\r\n\r\n",
		want: []Problem{N, CLTE}, heads: 2, goAccepts: 2,
	},
	{name: "CRLF CRLF after a POST is skipped", in: postCL + "\r\n\r\n" + clte, want: []Problem{N, CLTE}, heads: 2, goAccepts: 2},
	{name: "LF CR after a chunked POST is skipped", in: chunkedH + "0\r\n\r\n" + "\n\r" + clte, want: []Problem{N, CLTE}, heads: 2, goAccepts: 2},
	{name: "five CR/LF after a POST", in: postCL + "\r\n\r\n\r" + clte, want: []Problem{N, N}, heads: 1, goAccepts: 1},
	{name: "CRLF after a GET is not skipped", in: get + "\r\n" + clte, want: []Problem{N, N}, heads: 1, goAccepts: 1},
	{name: "CRLF after a lower-case post is not skipped", in: "post / HTTP/1.1\r\nHost: a\r\n\r\n\r\n" + clte, want: []Problem{N, N}, heads: 1, goAccepts: 1},
	{name: "CRLF before the first request", in: "\r\n" + clte, want: []Problem{N}, heads: 0, goAccepts: 0},

	// Long lines, split anywhere.
	{name: "long header line", in: head("GET / HTTP/1.1", "Host: a", "Cookie: "+strings.Repeat("c", 10000)) + clte, want: []Problem{N, CLTE}, heads: 2, goAccepts: 2},
	{name: "long request target", in: head("GET /"+strings.Repeat("a", 9000)+" HTTP/1.1", "Host: a") + clte, want: []Problem{N, CLTE}, heads: 2, goAccepts: 2},
	{name: "long method", in: head(strings.Repeat("M", 200)+" / HTTP/1.1", "Host: a") + clte, want: []Problem{N, CLTE}, heads: 2, goAccepts: 2},
	{name: "padded Content-Length", in: req("HTTP/1.1", []string{"Content-Length:" + strings.Repeat(" ", 200) + "5"}, "hello") + get, want: []Problem{BadCL}, heads: 1, goAccepts: 2},

	// Versions and methods.
	{name: "HTTP/1.9 is HTTP/1.1 to net/http", in: req("HTTP/1.9", []string{"Transfer-Encoding: chunked"}, "0\r\n\r\n") + clte, want: []Problem{N, CLTE}, heads: 2, goAccepts: 2},
	{name: "PRI with headers is an ordinary request", in: head("PRI * HTTP/2.0", "Host: a") + clte, want: []Problem{N, CLTE}, heads: 2, goAccepts: 2},
	{name: "HTTP/2.0 GET", in: head("GET / HTTP/2.0", "Host: a") + clte, want: []Problem{N}, heads: 0, goAccepts: 0},
	{name: "no version", in: "GET /\r\n" + clte, want: []Problem{N}, heads: 0, goAccepts: 0},
	{name: "TLS ClientHello", in: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n" + clte, want: []Problem{N}, heads: 0, goAccepts: 0},
	{name: "invalid method", in: head("G(T / HTTP/1.1", "Host: a") + clte, want: []Problem{N}, heads: 0, goAccepts: 0},

	// Tunnels and upgrades.
	{
		name: "CONNECT then arbitrary bytes",
		in:   "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n" + clte + "\x16\x03\x01\x00\xff\n" + clte,
		want: []Problem{N, N, N}, heads: 1, goAccepts: 1,
	},
	{name: "lower-case connect is not CONNECT", in: head("connect a:443 HTTP/1.1", "Host: a") + clte, want: []Problem{N, CLTE}, heads: 2, goAccepts: 2},
	{name: "Upgrade does not stop scanning", in: head("GET / HTTP/1.1", "Host: a", "Connection: Upgrade", "Upgrade: h2c") + clte, want: []Problem{N, CLTE}, heads: 2, goAccepts: 2},

	// Chunked bodies net/http refuses: it fails the body and closes the
	// connection, and the scanner stops.
	{name: "bare LF after chunk size", in: chunkedH + "5\nhello\r\n0\r\n\r\n" + clte, want: []Problem{N, N}, heads: 1, goAccepts: 1},
	{name: "blank before chunk extension", in: chunkedH + "5 ;x\r\nhello\r\n0\r\n\r\n" + clte, want: []Problem{N, N}, heads: 1, goAccepts: 1},
	{name: "blank before chunk size", in: chunkedH + " 5\r\nhello\r\n0\r\n\r\n" + clte, want: []Problem{N, N}, heads: 1, goAccepts: 1},
	{name: "CR inside chunk extension", in: chunkedH + "5;a\rb\r\nhello\r\n0\r\n\r\n" + clte, want: []Problem{N, N}, heads: 1, goAccepts: 1},
	{name: "17 hex digits", in: chunkedH + "00000000000000005\r\nhello\r\n0\r\n\r\n" + clte, want: []Problem{N, N}, heads: 1, goAccepts: 1},
	{name: "16 hex digits", in: chunkedH + "0000000000000005\r\nhello\r\n0\r\n\r\n" + clte, want: []Problem{N, CLTE}, heads: 2, goAccepts: 2},
	{name: "chunk data not followed by CRLF", in: chunkedH + "5\r\nhelloX\r\n0\r\n\r\n" + clte, want: []Problem{N, N}, heads: 1, goAccepts: 1},
	{name: "chunk data followed by bare LF", in: chunkedH + "5\r\nhello\n0\r\n\r\n" + clte, want: []Problem{N, N}, heads: 1, goAccepts: 1},
	{name: "empty chunk size", in: chunkedH + "\r\n" + clte, want: []Problem{N, N}, heads: 1, goAccepts: 1},
	{
		name: "chunk-size line of 4096 bytes",
		in:   chunkedH + "1;" + strings.Repeat("x", 4096-4) + "\r\nX\r\n0\r\n\r\n" + clte,
		want: []Problem{N, CLTE}, heads: 2, goAccepts: 2,
	},
	{
		name: "chunk-size line of 4097 bytes",
		in:   chunkedH + "1;" + strings.Repeat("x", 4097-4) + "\r\nX\r\n0\r\n\r\n" + clte,
		want: []Problem{N, N}, heads: 1, goAccepts: 1,
	},
	{
		name: "too much chunk overhead",
		in:   chunkedH + strings.Repeat("1;"+strings.Repeat("x", 4000)+"\r\nX\r\n", 6) + "0\r\n\r\n" + clte,
		want: []Problem{N, N}, heads: 1, goAccepts: 1,
	},
	{
		name: "chunk overhead just under the limit",
		in:   chunkedH + strings.Repeat("1;"+strings.Repeat("x", 4000)+"\r\nX\r\n", 4) + "0\r\n\r\n" + clte,
		want: []Problem{N, CLTE}, heads: 2, goAccepts: 2,
	},

	// Trailers as net/http reads them.
	{name: "empty trailer ended by bare LF", in: chunkedH + "0\r\n\n" + clte, want: []Problem{N, CLTE}, heads: 2, goAccepts: 2},
	{name: "trailer ended by bare LF", in: chunkedH + "0\r\nX: 1\r\n\n" + clte, want: []Problem{N, CLTE}, heads: 2, goAccepts: 2},
	{name: "folded trailer", in: chunkedH + "0\r\nX: 1\r\n 2\r\n\r\n" + clte, want: []Problem{N, CLTE}, heads: 2, goAccepts: 2},
	{name: "trailer named Content-Length", in: chunkedH + "0\r\nContent-Length: 5\r\nTransfer-Encoding: x\r\n\r\n" + clte, want: []Problem{N, CLTE}, heads: 2, goAccepts: 2},
}

// splits yields the ways each case is cut into reads: whole, every
// two-piece cut (every cut near the ends and a stride in the middle for
// long inputs), one byte at a time, and random cuts.
func splits(in []byte) iter.Seq2[string, [][]byte] {
	return func(yield func(string, [][]byte) bool) { splitsInto(in, yield) }
}

func splitsInto(in []byte, yield func(name string, chunks [][]byte) bool) {
	if !yield("whole", [][]byte{in}) {
		return
	}
	for i := 1; i < len(in); i++ {
		if len(in) > 1500 && i > 500 && i < len(in)-500 && i%61 != 0 {
			continue
		}
		if !yield("cut at "+strconv.Itoa(i), [][]byte{in[:i], in[i:]}) {
			return
		}
	}
	ones := make([][]byte, len(in))
	for i := range in {
		ones[i] = in[i : i+1]
	}
	if !yield("one byte at a time", ones) {
		return
	}
	rng := rand.New(rand.NewPCG(1, uint64(len(in))))
	for i := range 20 {
		if !yield("random "+strconv.Itoa(i), randomSplit(in, rng)) {
			return
		}
	}
}

func TestScanner(t *testing.T) {
	for _, tc := range scanCases {
		t.Run(tc.name, func(t *testing.T) {
			in := []byte(tc.in)
			goReqs := goRequests(in)
			if len(goReqs) != tc.goAccepts {
				t.Fatalf("net/http accepts %d requests, the case says %d", len(goReqs), tc.goAccepts)
			}
			for name, chunks := range splits(in) {
				if err := checkCase(tc, goReqs, chunks); err != nil {
					t.Fatalf("%s: %v", name, err)
				}
			}
		})
	}
}

func checkCase(tc scanCase, goReqs []goRequest, chunks [][]byte) error {
	r, err := scanChunks(chunks)
	if err != nil {
		return err
	}
	if err := compareWithGo(goReqs, r); err != nil {
		return err
	}
	if got := len(r.heads); got != tc.heads {
		return fmt.Errorf("counted %d heads, want %d (stopped: %q)", got, tc.heads, r.c.s.stopWhy)
	}
	if scanning := r.c.s.state != stStopped; scanning != tc.scanning {
		return fmt.Errorf("scanning = %v, want %v (stopped: %q)", scanning, tc.scanning, r.c.s.stopWhy)
	}
	got := problems(r.c, len(tc.want)+2)
	want := append(slices.Clone(tc.want), None, None)
	if !slices.Equal(got, want) {
		return fmt.Errorf("Next() gave %v, want %v", got, want)
	}
	return nil
}

func TestProblemString(t *testing.T) {
	seen := map[string]bool{}
	for p := range numProblems {
		s := p.String()
		if s == "" || seen[s] || strings.HasPrefix(s, "framing.Problem(") {
			t.Errorf("Problem(%d).String() = %q", p, s)
		}
		seen[s] = true
	}
	if got, want := Problem(200).String(), "framing.Problem(200)"; got != want {
		t.Errorf("Problem(200).String() = %q, want %q", got, want)
	}
}

// TestTokenTable checks the method alphabet against net/http itself: a
// method containing byte c is accepted by http.ReadRequest exactly when
// the table says c is a token byte.
func TestTokenTable(t *testing.T) {
	for c := range 256 {
		if c == ' ' || c == '\n' {
			continue // these split the line, not the method
		}
		in := []byte("A" + string(rune(0)) + "B / HTTP/1.1\r\nHost: a\r\n\r\n")
		in[1] = byte(c)
		goOK := len(goRequests(in)) == 1
		if tokenTable[c] != goOK {
			t.Errorf("byte %#02x: table says %v, net/http says %v", c, tokenTable[c], goOK)
		}
	}
}

// TestNextOrdinals: a Problem belongs to its ordinal, not to the calls
// around it.
func TestNextOrdinals(t *testing.T) {
	r, err := scanChunks([][]byte{[]byte(get + get + clte)})
	if err != nil {
		t.Fatal(err)
	}
	got := problems(r.c, 5)
	if want := []Problem{N, N, CLTE, N, N}; !slices.Equal(got, want) {
		t.Fatalf("Next() = %v, want %v", got, want)
	}
}

package framing

import (
	"math/rand/v2"
	"testing"
)

// FuzzScanner checks, for arbitrary input split at random points:
//
//   - Read returns exactly the input, and nothing panics;
//   - differential against net/http: every request net/http's parser would
//     hand to the handler starts where the scanner counted a head, unless
//     the scanner had already stopped on purpose (compareWithGo);
//
// and, for a stream of n well-formed requests built from the same input
// (genRequests; random methods, Content-Length, chunked or no bodies, and
// the variations net/http tolerates), that net/http parses n requests, the
// scanner counts n heads, is still scanning, and Next gives None n times;
// then the differential check again on that stream with a few bytes
// damaged.
func FuzzScanner(f *testing.F) {
	for _, tc := range scanCases {
		if len(tc.in) < 2000 {
			f.Add([]byte(tc.in), uint64(len(tc.in)))
		}
	}
	f.Add([]byte(nil), uint64(0))
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, uint64(7))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		rng := rand.New(rand.NewPCG(seed, 0x5eca5e))

		r, err := scanChunks(randomSplit(data, rng))
		if err != nil {
			t.Fatalf("%v\ninput %q", err, data)
		}
		if err := compareWithGo(goRequests(data), r); err != nil {
			t.Fatalf("%v\ninput %q", err, data)
		}

		e := &entropy{data: data, rng: rng}
		n := 1 + e.intn(8)
		stream := genRequests(e, n)
		goReqs := goRequests(stream)
		if len(goReqs) != n {
			t.Fatalf("generator: net/http parses %d of %d requests\nstream %q", len(goReqs), n, stream)
		}
		r, err = scanChunks(randomSplit(stream, rng))
		if err != nil {
			t.Fatalf("%v\nstream %q", err, stream)
		}
		if err := compareWithGo(goReqs, r); err != nil {
			t.Fatalf("%v\nstream %q", err, stream)
		}
		if len(r.heads) != n || r.c.s.state == stStopped {
			t.Fatalf("scanner counted %d heads of %d, stopped: %q\nstream %q", len(r.heads), n, r.c.s.stopWhy, stream)
		}
		for i := range n {
			if p := r.c.Next(); p != None {
				t.Fatalf("request %d: Next() = %v\nstream %q", i+1, p, stream)
			}
		}

		// Near-valid input is where parsers disagree: damage the stream
		// with framing-sensitive bytes and compare with net/http again.
		mutated := mutate(e, stream)
		r, err = scanChunks(randomSplit(mutated, rng))
		if err != nil {
			t.Fatalf("%v\nstream %q", err, mutated)
		}
		if err := compareWithGo(goRequests(mutated), r); err != nil {
			t.Fatalf("%v\nstream %q", err, mutated)
		}
	})
}

// mutate inserts, replaces or deletes a few bytes, or a snippet of
// framing syntax, at random places.
func mutate(e *entropy, in []byte) []byte {
	const alphabet = " \t\r\n;:0aF-,\x00\x7f\x80"
	snippets := []string{
		"\r\n", "\n", "\r\n\r\n", "\r\n ", "\r\nTransfer-Encoding: chunked", "\r\nContent-Length: 3",
		"\r\nContent-Length: 0", "0\r\n\r\n", ";x", " HTTP/1.0", "\r\nUpgrade: x", "CONNECT ", "POST ",
	}
	out := append([]byte(nil), in...)
	for range 1 + e.intn(4) {
		if len(out) == 0 {
			break
		}
		i := e.intn(len(out))
		switch e.intn(4) {
		case 0:
			out[i] = alphabet[e.intn(len(alphabet))]
		case 1:
			out = append(out[:i], append([]byte{alphabet[e.intn(len(alphabet))]}, out[i:]...)...)
		case 2:
			out = append(out[:i], out[i+1:]...)
		default:
			out = append(out[:i], append([]byte(snippets[e.intn(len(snippets))]), out[i:]...)...)
		}
	}
	return out
}

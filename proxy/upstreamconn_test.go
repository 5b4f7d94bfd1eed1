package proxy

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net"
	"testing"
)

// onlyReader hides WriteTo, as a request body does.
type onlyReader struct{ io.Reader }

// pipePair is a loopback TCP connection whose far end is hashed (or, for
// benchmarks, discarded).
func pipePair(t testing.TB, hash bool) (*net.TCPConn, <-chan [32]byte) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sum := make(chan [32]byte, 1)
	go func() {
		defer ln.Close()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		var s [32]byte
		if !hash {
			io.Copy(io.Discard, c)
		} else {
			h := sha256.New()
			io.Copy(h, c)
			copy(s[:], h.Sum(nil))
		}
		c.Close()
		sum <- s
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	return c.(*net.TCPConn), sum
}

// TestUpstreamConnReadFrom: bodies of every size arrive byte-exact, the
// buffer growing from 32 KiB to 256 KiB mid-body included.
func TestUpstreamConnReadFrom(t *testing.T) {
	for _, size := range []int{0, 1, smallCopyBuf - 1, smallCopyBuf, smallCopyBuf + 1, 3*bigCopyBuf + 17} {
		body := make([]byte, size)
		for i := range body {
			body[i] = byte(i * 7)
		}
		c, sum := pipePair(t, true)
		n, err := upstreamConn{c}.ReadFrom(onlyReader{bytes.NewReader(body)})
		c.CloseWrite()
		if err != nil || n != int64(size) {
			t.Fatalf("size %d: ReadFrom = %d, %v", size, n, err)
		}
		if got := <-sum; got != sha256.Sum256(body) {
			t.Errorf("size %d: the far end received different bytes", size)
		}
		c.Close()
	}
}

// BenchmarkUploadCopy compares the socket's own ReadFrom (32 KiB copies)
// with upstreamConn's for a 64 MiB body over loopback.
func BenchmarkUploadCopy(b *testing.B) {
	body := make([]byte, 64<<20)
	for _, v := range []struct {
		name string
		wrap func(*net.TCPConn) io.ReaderFrom
	}{
		{"socket", func(c *net.TCPConn) io.ReaderFrom { return c }},
		{"upstreamConn", func(c *net.TCPConn) io.ReaderFrom { return upstreamConn{c} }},
	} {
		b.Run(v.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				c, sum := pipePair(b, false)
				if _, err := v.wrap(c).ReadFrom(onlyReader{bytes.NewReader(body)}); err != nil {
					b.Fatal(err)
				}
				c.CloseWrite()
				<-sum
				c.Close()
			}
		})
	}
}

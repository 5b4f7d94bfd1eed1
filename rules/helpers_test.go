package rules

import (
	"flag"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// update rewrites the golden files of the error fixtures:
//
//	go test ./rules/ -run TestInvalidFixtures -update
//
// Review the diff: every message is part of the user interface.
var update = flag.Bool("update", false, "rewrite testdata/invalid/*.err golden files")

// mustCompile compiles one rules file given as text, failing the test on any
// error.
func mustCompile(t testing.TB, text string) *Set {
	t.Helper()
	set, err := Compile([]Source{{Name: "test.yaml", Data: []byte(text)}})
	if err != nil {
		t.Fatalf("compile:\n%v", err)
	}
	return set
}

// compileErr compiles text that must not compile and returns the message.
func compileErr(t testing.TB, text string) string {
	t.Helper()
	set, err := Compile([]Source{{Name: "test.yaml", Data: []byte(text)}})
	if err == nil {
		t.Fatalf("compiled (%d rules), want an error", len(set.Rules()))
	}
	return err.Error()
}

// opt changes the facts built by req.
type opt func(*Facts)

// req builds the facts the proxy would gather for a request line:
// "POST https://files.example.com/upload" or "CONNECT example.com:443",
// dialed at an address in country.
func req(t testing.TB, line, country string, opts ...opt) Facts {
	t.Helper()
	method, target, ok := strings.Cut(line, " ")
	if !ok {
		t.Fatalf("bad request line %q", line)
	}
	f := Facts{Method: method, Country: country, Client: netip.MustParseAddr("10.1.2.3")}
	if method == "CONNECT" {
		h, p, err := SplitHostPort(target, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Host, f.Port, f.Stream = h, p, true
	} else {
		u, err := url.Parse(target)
		if err != nil {
			t.Fatal(err)
		}
		def := uint16(80)
		if u.Scheme == "https" || u.Scheme == "wss" {
			def = 443
		}
		h, p, err := SplitHostPort(u.Host, def)
		if err != nil {
			t.Fatal(err)
		}
		f.Host, f.Port, f.Path = h, p, u.EscapedPath()
		if f.Path == "" {
			f.Path = "/"
		}
		f.Stream = u.Scheme == "ws" || u.Scheme == "wss"
	}
	for _, o := range opts {
		o(&f)
	}
	return f
}

// body gives the request a body of exactly n bytes.
func body(n int64) opt {
	return func(f *Facts) { f.Body.Present, f.Body.Size, f.Body.SizeExact = n > 0, n, true }
}

// chunked gives the request a body without length of which seen bytes have
// been read so far.
func chunked(seen int64) opt {
	return func(f *Facts) { f.Body.Present, f.Body.Size, f.Body.SizeExact = true, seen, false }
}

func ctype(mt string) opt { return func(f *Facts) { f.Body.ContentType = mt } }

func fileParts(t Tri) opt { return func(f *Facts) { f.Body.FileParts = t } }

// parts sets the media types of the file parts seen; complete says the
// whole body has been seen.
func parts(complete bool, types ...string) opt {
	return func(f *Facts) {
		f.Body.PartTypes, f.Body.PartsComplete = types, complete
		if len(types) > 0 {
			f.Body.FileParts = TriYes
		}
	}
}

func encoded() opt { return func(f *Facts) { f.Body.Encoded = true } }

func final() opt { return func(f *Facts) { f.Final = true } }

func client(a string) opt {
	return func(f *Facts) { f.Client = netip.MustParseAddr(a) }
}

func addr(a string) opt { return func(f *Facts) { f.Addr = netip.MustParseAddr(a) } }

// writeFile writes a file for a test, creating its folder.
func writeFile(t testing.TB, path, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceFile replaces path atomically, as editors and config management
// do: write a temporary file beside it and rename it over.
func replaceFile(t testing.TB, path, data string) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, data)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

var netipZero netip.Addr

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

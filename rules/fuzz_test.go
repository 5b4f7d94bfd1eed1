package rules

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// addTestdataSeeds adds every rules file under testdata/valid and
// testdata/invalid (the hidden ones of the directory fixture too) as a seed.
func addTestdataSeeds(f *testing.F) {
	n := 0
	for _, root := range []string{"testdata/valid", "testdata/invalid"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasSuffix(path, ".err") {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			f.Add(data)
			n++
			return nil
		})
		if err != nil {
			f.Fatal(err)
		}
	}
	f.Add(defaultRules)
	if n < 40 {
		f.Fatalf("only %d seed files", n)
	}
}

// lineCount is the number of lines of data as YAML counts them: line
// breaks are LF, CR, CRLF, and NEL, LS and PS (YAML 1.1).
func lineCount(data []byte) int {
	n := 1
	for i := 0; i < len(data); i++ {
		switch data[i] {
		case '\n':
			n++
		case '\r':
			if i+1 >= len(data) || data[i+1] != '\n' {
				n++
			}
		}
	}
	s := string(data)
	return n + strings.Count(s, "\u0085") + strings.Count(s, "\u2028") + strings.Count(s, "\u2029")
}

// FuzzParse: Compile never panics, and returns a *Set or an ErrorList
// whose every entry points into the file it was given (never into the
// built-in catalog), within the file's lines.
func FuzzParse(f *testing.F) {
	addTestdataSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		const name = "fuzz.yaml"
		set, err := Compile([]Source{{Name: name, Data: data}})
		if err == nil {
			if set == nil {
				t.Fatal("nil set and nil error")
			}
			for _, r := range set.Rules() {
				if !nameRE.MatchString(r.Name) || r.File != name || r.Line < 1 {
					t.Errorf("rule %q at %s:%d", r.Name, r.File, r.Line)
				}
			}
			// Whatever compiled can decide.
			for _, fx := range []Facts{
				{Host: "obs.line-scdn.net", Port: 443, Method: "POST", Path: "/upload", Country: "JP", Body: Body{Present: true, Size: 10, ContentType: "multipart/form-data"}},
				{Host: "example.com", Port: 443, Method: "CONNECT", Country: CountryUnknown, Stream: true, Final: true},
			} {
				set.Prepare(&fx)
				d := set.Decide(&fx)
				if d.Budget < Unlimited {
					t.Errorf("budget %d", d.Budget)
				}
			}
			return
		}
		if set != nil {
			t.Fatal("a set and an error")
		}
		var list ErrorList
		if !errors.As(err, &list) {
			t.Fatalf("error %T is not an ErrorList: %v", err, err)
		}
		if len(list) == 0 || len(list) > maxErrors {
			t.Fatalf("%d errors", len(list))
		}
		lines := lineCount(data)
		for _, e := range list {
			if e.File != name {
				t.Errorf("error in %q, not in the file compiled: %v", e.File, e)
			}
			if e.Line > lines {
				t.Errorf("line %d of a file of %d lines: %v", e.Line, lines, e)
			}
			if e.Line <= 0 && !wholeFileError(e) {
				t.Errorf("no line: %v", e)
			}
			if e.Line < 0 || e.Column < 0 || e.Msg == "" {
				t.Errorf("bad position or empty message: %#v", e)
			}
		}
	})
}

// FuzzNormalizeHost: never panics; a normalised host is a fixed point,
// made of [a-z0-9._:-] only, and SplitHostPort agrees with it.
func FuzzNormalizeHost(f *testing.F) {
	for _, h := range []string{
		"example.com", "Example.COM.", "example.com..", "bücher.de", "ＥＸＡＭＰＬＥ.com", "xn--bcher-kva.de",
		"0x7f.1", "2130706433", "0177.0.0.1", "1.2.3.256", "1.2.3.4.5", "[::ffff:1.2.3.4]", "[fe80::1%eth0]",
		"[2001:DB8::1]", "2001:db8::1", "a b", "a/b", "a@b", "", ".", "_dmarc.example", "例え.テスト", "0x", "0X",
		strings.Repeat("a", 64) + ".com", strings.Repeat("a.", 127) + "a", "１２７.0.0.1", "a\u200db", "xn--", "xn--a.1",
		"0.0x10.010", "4294967295", "4294967296", "09", "[", "[]", "]", ":", "::", "example.com:443",
	} {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, h string) {
		out, err := NormalizeHost(h)
		if err != nil {
			var he *HostError
			if !errors.As(err, &he) || he.Host != h || out != "" {
				t.Fatalf("NormalizeHost(%q) = %q, %v", h, out, err)
			}
			return
		}
		if out == "" || len(out) > 253 {
			t.Fatalf("NormalizeHost(%q) = %q", h, out)
		}
		for i := 0; i < len(out); i++ {
			c := out[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' || c == ':') {
				t.Fatalf("NormalizeHost(%q) = %q: byte %q", h, out, c)
			}
		}
		again, err := NormalizeHost(out)
		if err != nil || again != out {
			t.Fatalf("NormalizeHost(%q) = %q, but NormalizeHost(%q) = %q, %v", h, out, out, again, err)
		}
		// The same host in an authority, with a port, gives the same
		// result through SplitHostPort.
		auth := h
		if strings.IndexByte(h, ':') >= 0 && h[0] != '[' {
			auth = "[" + h + "]"
		}
		if host, port, err := SplitHostPort(auth+":443", 0); err != nil || host != out || port != 443 {
			t.Errorf("SplitHostPort(%q) = %q, %d, %v; NormalizeHost(%q) = %q", auth+":443", host, port, err, h, out)
		}
	})
}

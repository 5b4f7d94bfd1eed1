package rules

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInvalidFixtures loads every rules file (or directory) under
// testdata/invalid and compares the error with its golden file <name>.err,
// in the manner of blackbox_exporter's invalid-*.yml: the messages are the
// user interface of a rules file, so each one is pinned, file:line:col and
// all. Run with -update to rewrite the golden files, then review the diff.
func TestInvalidFixtures(t *testing.T) {
	entries, err := os.ReadDir("testdata/invalid")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		name := e.Name()
		if strings.HasSuffix(name, ".err") {
			base := strings.TrimSuffix(name, ".err")
			if _, err := os.Stat(filepath.Join("testdata/invalid", base+".yaml")); err == nil {
				continue
			}
			if _, err := os.Stat(filepath.Join("testdata/invalid", base)); err == nil {
				continue
			}
			t.Errorf("golden file %s has no fixture", name)
			continue
		}
		if !e.IsDir() && !strings.HasSuffix(name, ".yaml") {
			t.Errorf("unexpected file testdata/invalid/%s", name)
			continue
		}
		n++
		base := strings.TrimSuffix(name, ".yaml")
		t.Run(base, func(t *testing.T) {
			path := filepath.Join("testdata/invalid", name)
			golden := filepath.Join("testdata/invalid", base+".err")
			_, err := Load(path)
			if err == nil {
				t.Fatalf("%s loaded without error", path)
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("error is %T, want ErrorList: %v", err, err)
			}
			for _, e := range list {
				if e.File == "" {
					t.Errorf("error without a file: %v", e)
				}
				if e.Line == 0 && !wholeFileError(e) {
					t.Errorf("error without a line: %v", e)
				}
			}
			got := err.Error() + "\n"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("error message differs from %s\n got:\n%s\nwant:\n%s", golden, got, want)
			}
		})
	}
	if n < 30 {
		t.Errorf("only %d invalid fixtures; the fixture folder is incomplete", n)
	}
}

// wholeFileError reports the errors that rightly have no line: the file as
// a whole is the problem, or yaml.v3 gave no position.
func wholeFileError(e *Error) bool {
	return strings.HasPrefix(e.Msg, "the file is empty") ||
		strings.HasPrefix(e.Msg, "YAML syntax: ") ||
		e.Msg == "no rules files found"
}

func TestErrorString(t *testing.T) {
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"line and column", &Error{File: "rules.yaml", Line: 3, Column: 5, Msg: "bad"}, "rules.yaml:3:5: bad"},
		{"line only", &Error{File: "rules.yaml", Line: 3, Msg: "bad"}, "rules.yaml:3: bad"},
		{"no position", &Error{File: "rules.yaml", Msg: "bad"}, "rules.yaml: bad"},
		{"column without line", &Error{File: "rules.yaml", Column: 7, Msg: "bad"}, "rules.yaml: bad"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestErrorListUnwrap(t *testing.T) {
	list := ErrorList{
		{File: "a.yaml", Line: 1, Column: 1, Msg: "first"},
		{File: "b.yaml", Line: 2, Column: 3, Msg: "second"},
	}
	if got, want := list.Error(), "a.yaml:1:1: first\nb.yaml:2:3: second"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	var err error = list
	var e *Error
	if !errors.As(err, &e) || e.Msg != "first" {
		t.Errorf("errors.As found %v, want the first entry", e)
	}
	if !errors.Is(err, list[1]) {
		t.Errorf("errors.Is does not find the second entry")
	}
}

// TestErrorsAreCapped: a file full of mistakes yields at most maxErrors
// messages, not one per line of a pasted-in blob.
func TestErrorsAreCapped(t *testing.T) {
	var b strings.Builder
	b.WriteString("version: 1\nrules:\n")
	for range 2 * maxErrors {
		b.WriteString("  - name: x\n    action: maybe\n")
	}
	_, err := Compile([]Source{{Name: "big.yaml", Data: []byte(b.String())}})
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("got %v, want an ErrorList", err)
	}
	if len(list) != maxErrors {
		t.Errorf("got %d errors, want %d", len(list), maxErrors)
	}

	// The same across files: each file is capped, and so is the sum.
	var src []Source
	for i := range 3 {
		src = append(src, Source{Name: string(rune('a'+i)) + ".yaml", Data: []byte("version: 1\nfoo: 1\n" + strings.Repeat("bar: 2\n", 20))})
	}
	_, err = Compile(src)
	if !errors.As(err, &list) || len(list) != maxErrors {
		t.Errorf("got %d errors across files, want %d", len(list), maxErrors)
	}
}

func TestCompileNoSources(t *testing.T) {
	_, err := Compile(nil)
	if err == nil || err.Error() != "rules: no rules files found" {
		t.Errorf("got %v", err)
	}
}

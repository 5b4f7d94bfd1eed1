package geo

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps geo what design.md says it is: it knows nothing of HTTP,
// rules or the proxy, and never resolves names. (Prometheus brings net/http
// in indirectly; what matters is that geo's own code does not use it.)
func TestImports(t *testing.T) {
	forbidden := map[string]string{
		"net":                                    "geo must not resolve names; use net/netip",
		"net/http":                               "geo knows nothing of HTTP",
		"os/exec":                                "geo runs nothing",
		"github.com/sekisho/sekisho/rules":       "dependencies point cmd → proxy → rules, geo",
		"github.com/sekisho/sekisho/proxy":       "dependencies point cmd → proxy → rules, geo",
		"github.com/sekisho/sekisho/geo/geotest": "geotest is for tests only",
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		ast, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range ast.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				t.Fatal(err)
			}
			why, bad := forbidden[path]
			if !bad {
				for p, w := range forbidden {
					if strings.HasPrefix(path, p+"/") && p != "net" {
						why, bad = w, true
					}
				}
			}
			if bad {
				t.Errorf("%s imports %s: %s", f, path, why)
			}
		}
	}
}

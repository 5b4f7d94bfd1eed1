package deploy

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"sigs.k8s.io/yaml"
)

// repo is the repository root, relative to this package.
const repo = ".."

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// sekishoConfig is the part of sekisho.yaml that the deployment files must
// agree with. Other keys are sekisho's business: `sekisho check` (run by
// build.sh) validates whole files.
type sekishoConfig struct {
	Listen      any    `json:"listen"`
	AdminListen string `json:"admin_listen"`
	Rules       string `json:"rules"`
	Geo         struct {
		Database string `json:"database"`
	} `json:"geo"`
	Log struct {
		Audit string `json:"audit"`
	} `json:"log"`
}

func loadSekishoConfig(t *testing.T, path string) sekishoConfig {
	t.Helper()
	var c sekishoConfig
	if err := yaml.Unmarshal(readFile(t, path), &c); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

// listenAddrs returns listen as a list (it may be one string or a list).
func (c sekishoConfig) listenAddrs() []string {
	switch v := c.Listen.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, x := range v {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// hostPort splits an address and fails the test if it is not host:port.
func hostPort(t *testing.T, what, addr string) (string, string) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%s: %q: %v", what, addr, err)
	}
	return h, p
}

// wildcard reports whether a listen host accepts connections from outside
// the container or pod.
func wildcard(host string) bool {
	return host == "" || host == "0.0.0.0" || host == "::"
}

func abs(t *testing.T, path string) string {
	t.Helper()
	a, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

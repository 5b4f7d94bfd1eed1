package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// The intercepted-HTTPS scenario needs many host names (a new name per
// connection, so that every proxy must sign a new certificate), and the
// proxies resolve names themselves. Both read them from one hosts file in
// the run's directory: Squid as its hosts_file, sekisho as its
// resolver.hosts_file. The system's /etc/hosts is not touched.

// hostNames hands out benchmark host names, each once.
type hostNames struct {
	file  string // hosts(5) file with every name
	total int
	mu    sync.Mutex
	next  int
}

// benchName is the n-th benchmark name.
func benchName(n int) string { return fmt.Sprintf("h%d.%s", n, benchDomain) }

// Fixed names: the warm handshake host and the kept-alive host.
var (
	warmName = "warm." + benchDomain
	keepName = "keep." + benchDomain
)

// setupHosts writes total names (plus the fixed ones) into dir/hosts.
func setupHosts(dir string, total int) (*hostNames, error) {
	h := &hostNames{file: filepath.Join(dir, "hosts"), total: total}
	var b bytes.Buffer
	b.WriteString("# sekisho-bench: names of the interception scenario\n")
	for _, n := range []string{warmName, keepName} {
		fmt.Fprintf(&b, "%s %s\n", upstreamIP, n)
	}
	for i := range total {
		fmt.Fprintf(&b, "%s %s\n", upstreamIP, benchName(i))
	}
	if err := os.WriteFile(h.file, b.Bytes(), 0o644); err != nil {
		return nil, err
	}
	return h, nil
}

// take returns n fresh names, fewer when the pool runs out.
func (h *hostNames) take(n int) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	n = min(n, h.total-h.next)
	out := make([]string, n)
	for i := range out {
		out[i] = benchName(h.next + i)
	}
	h.next += n
	return out
}

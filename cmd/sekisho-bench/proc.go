package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// mode is how a proxy is configured for a scenario.
type mode int

const (
	modePlain     mode = iota // plain HTTP and CONNECT tunnels
	modeIntercept             // TLS interception of *.bench.example
)

func (m mode) String() string {
	if m == modeIntercept {
		return "intercept"
	}
	return "plain"
}

// proxyDef is a proxy under test: how to start it in a mode.
type proxyDef struct {
	name       string
	intercepts bool     // has a TLS interception mode
	scenarios  []string // the scenarios it takes part in (nil: all)
	version    string
	// start writes its configuration into dir and starts it listening on
	// addr; it returns the command to run and, for interception, the CA
	// clients must trust.
	start func(b *bench, dir, addr string, m mode) (*exec.Cmd, *x509.CertPool, error)
}

// proc is one running proxy process.
type proc struct {
	name   string
	addr   string
	pid    int
	dir    string
	caPool *x509.CertPool
	cmd    *exec.Cmd
	done   chan struct{}
	logs   []*os.File
	extra  map[string]string // proxy-specific: e.g. sekisho's pprof address
}

// launch starts def in a new directory under the run's temp dir and waits
// until it proxies a request. RLIMIT_NOFILE is set with ulimit in a shell
// that then execs the proxy, so the pid is the proxy's.
func (b *bench) launch(def *proxyDef, m mode, env []string) (*proc, error) {
	b.seq++
	dir := filepath.Join(b.dir, fmt.Sprintf("%03d-%s-%s", b.seq, def.name, m))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	cmd, pool, err := def.start(b, dir, addr, m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", def.name, err)
	}
	nofile := strconv.Itoa(b.opt.proxyNofile)
	args := append([]string{"-c", `ulimit -Hn ` + nofile + ` && ulimit -Sn ` + nofile + ` && exec "$0" "$@"`, cmd.Path}, cmd.Args[1:]...)
	sh := exec.Command("/bin/sh", args...)
	sh.Dir = cmd.Dir
	sh.Env = append(append(os.Environ(), cmd.Env...), env...)
	sh.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdout, err := os.Create(filepath.Join(dir, "stdout.log"))
	if err != nil {
		return nil, err
	}
	stderr, err := os.Create(filepath.Join(dir, "stderr.log"))
	if err != nil {
		_ = stdout.Close()
		return nil, err
	}
	sh.Stdout, sh.Stderr = stdout, stderr
	if err := sh.Start(); err != nil {
		_ = stdout.Close()
		_ = stderr.Close()
		return nil, fmt.Errorf("%s: %w", def.name, err)
	}
	p := &proc{name: def.name, addr: addr, pid: sh.Process.Pid, dir: dir, caPool: pool, cmd: sh,
		done: make(chan struct{}), logs: []*os.File{stdout, stderr}, extra: map[string]string{}}
	go func() {
		_ = sh.Wait()
		close(p.done)
	}()
	if err := b.waitReady(p); err != nil {
		p.stop()
		return nil, fmt.Errorf("%s did not come up: %w\n%s", def.name, err, p.logTail())
	}
	return p, nil
}

// waitReady polls until a plain GET through the proxy answers 200, for at
// most 20 seconds.
func (b *bench) waitReady(p *proc) error {
	t := &target{name: p.name, proc: p}
	tr := t.transport(nil)
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return errors.New("exited")
		default:
		}
		resp, err := client.Get("http://" + b.up.HTTP + "/small")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = errors.New(resp.Status)
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("timed out: %v", last)
}

// stop ends the proxy: SIGTERM to its process group, SIGKILL after 3
// seconds.
func (p *proc) stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-p.pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	}
	// Helpers that left the group (none should) are not chased: only the
	// group this harness created is signalled.
	for _, f := range p.logs {
		_ = f.Close()
	}
}

// alive reports whether the process is still running.
func (p *proc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// logTail is the end of the proxy's logs, for error messages.
func (p *proc) logTail() string {
	var sb strings.Builder
	ents, _ := os.ReadDir(p.dir)
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".log") || e.Name() == "access.log" || e.Name() == "audit.jsonl" {
			continue
		}
		b, err := os.ReadFile(filepath.Join(p.dir, e.Name()))
		if err != nil || len(b) == 0 {
			continue
		}
		if len(b) > 1500 {
			b = b[len(b)-1500:]
		}
		fmt.Fprintf(&sb, "--- %s:\n%s\n", e.Name(), b)
	}
	return sb.String()
}

// freePort finds a free TCP port on 127.0.0.1 (bound and released: the
// proxy binds it moments later).
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// runCmd runs a short command and returns its combined output.
func runCmd(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	c := exec.CommandContext(ctx, name, args...)
	c.Dir = dir
	c.Env = append(os.Environ(), env...)
	out, err := c.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sekisho/sekisho/geo/geotest"
	"github.com/sekisho/sekisho/proxy/proxytest"
)

const blockKR = `version: 1
rules:
  - name: block-foreign-uploads
    destinations: [foreign]
    upload: true
    action: block
`

const allowKR = `version: 1
domestic: [JP, KR]
rules:
  - name: block-foreign-uploads
    destinations: [foreign]
    upload: true
    action: block
`

// env is a running sekisho booted from a config file by the real wiring
// (start), with the test geo database and test sites.
type env struct {
	dir   string
	inst  *instance
	sites *proxytest.Sites
	out   *syncBuffer
	errs  *syncBuffer
}

type syncBuffer struct {
	mu chanMutex
	b  bytes.Buffer
}

type chanMutex chan struct{}

func (m chanMutex) lock()   { m <- struct{}{} }
func (m chanMutex) unlock() { <-m }

func newSyncBuffer() *syncBuffer { return &syncBuffer{mu: make(chanMutex, 1)} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.lock()
	defer s.mu.unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.lock()
	defer s.mu.unlock()
	return s.b.String()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replaceByRename writes content the way editors and config tools do:
// a new file renamed over the old one.
func replaceByRename(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	writeFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// boot writes sekisho.yaml (with extra lines appended) and starts sekisho.
func boot(t *testing.T, rulesRef string, extra string) *env {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "sekisho.yaml")
	writeFile(t, cfgPath, testConfig(t, dir, rulesRef, extra))
	return startConfig(t, dir, cfgPath)
}

// testConfig is a sekisho.yaml for the test sites, with a test geo
// database written to dir, the rules at rulesRef and extra lines appended.
func testConfig(t *testing.T, dir, rulesRef, extra string) string {
	geoPath := geotest.WriteFile(t, dir, geotest.CountryCode, geotest.Default)
	return fmt.Sprintf(`version: 1
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
rules: %s
geo:
  database: %s
  internal_networks: [10.0.0.0/8]
clients:
  allow: [127.0.0.0/8]
destinations:
  allow: [127.0.0.0/8, "::1/128"]
log:
  level: debug
%s`, rulesRef, geoPath, extra)
}

// startConfig starts sekisho on the configuration at cfgPath.
func startConfig(t *testing.T, dir, cfgPath string) *env {
	t.Helper()
	e := &env{dir: dir, sites: proxytest.NewSites(t), out: newSyncBuffer(), errs: newSyncBuffer()}
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	inst, err := start(context.Background(), cfg, options{stdout: e.out, stderr: e.errs, resolver: proxytest.DefaultResolver()})
	if err != nil {
		t.Fatal(err)
	}
	e.inst = inst
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = inst.Shutdown(ctx)
		if t.Failed() {
			t.Logf("sekisho log:\n%s", e.errs.String())
		}
	})
	return e
}

func (e *env) client() *http.Client {
	pu, _ := url.Parse("http://" + e.inst.ProxyAddrs[0])
	return &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu), DisableKeepAlives: true}, Timeout: 10 * time.Second}
}

// uploadStatus POSTs a small body to a test site through sekisho.
func (e *env) uploadStatus(t *testing.T, host string) int {
	t.Helper()
	resp, err := e.client().Post(e.sites.URL(host, "/upload"), "text/plain", strings.NewReader("residents' data"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func (e *env) waitStatus(t *testing.T, host string, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := e.uploadStatus(t, host)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload to %s: status %d, want %d (rules not reloaded?)", host, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *env) admin(t *testing.T, method, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+e.inst.AdminAddr+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func (e *env) metric(t *testing.T, line string) bool {
	t.Helper()
	_, m := e.admin(t, "GET", "/metrics")
	return strings.Contains(m, line)
}

func TestRulesReloadByRename(t *testing.T) {
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	writeFile(t, rulesPath, blockKR)
	e := boot(t, rulesPath, "")
	if got := e.uploadStatus(t, "kr.example"); got != 403 {
		t.Fatalf("initial rules: upload to KR %d, want 403", got)
	}
	replaceByRename(t, rulesPath, allowKR)
	e.waitStatus(t, "kr.example", 200)

	// A broken file: rejected with file:line, the previous rules stay.
	replaceByRename(t, rulesPath, allowKR+"  - name: broken\n    acton: block\n")
	deadline := time.Now().Add(5 * time.Second)
	for !e.metric(t, "sekisho_rules_last_reload_successful 0") {
		if time.Now().After(deadline) {
			t.Fatal("broken rules were not reported as a failed reload")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := e.uploadStatus(t, "kr.example"); got != 200 {
		t.Fatalf("after a broken reload the previous rules must stay in force: %d", got)
	}
	_, status := e.admin(t, "GET", "/-/status")
	if !strings.Contains(status, rulesPath+`:9:5: unknown field \"acton\" in a rule; did you mean \"action\"?`) {
		t.Errorf("status must show the file:line error:\n%s", status)
	}
	if !strings.Contains(e.errs.String(), "rules reload failed") {
		t.Errorf("failed reload must be logged:\n%s", e.errs.String())
	}
	if !e.metric(t, `sekisho_rules_reloads_total{result="failure"} 1`) {
		t.Error("failure counter not incremented")
	}

	// Fixed again: reloads.
	replaceByRename(t, rulesPath, blockKR)
	e.waitStatus(t, "kr.example", 403)
	if !e.metric(t, "sekisho_rules_last_reload_successful 1") {
		t.Error("last_reload_successful must be 1 again")
	}

	// Cut short to a valid file without rules: loaded, with a warning.
	replaceByRename(t, rulesPath, "version: 1\n")
	deadline = time.Now().Add(5 * time.Second)
	for !strings.Contains(e.errs.String(), "rules reloaded with no rules at all") {
		if time.Now().After(deadline) {
			t.Fatalf("no warning for rules reloaded down to none:\n%s", e.errs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRulesReloadConfigMapSwap mounts rules the way Kubernetes mounts a
// ConfigMap: the visible file is a symlink through "..data", and an update
// swaps "..data" to a new timestamped directory with one rename.
func TestRulesReloadConfigMapSwap(t *testing.T) {
	dir := t.TempDir()
	v1 := filepath.Join(dir, "..2026_11_23_10_00_00.000000001")
	if err := os.Mkdir(v1, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(v1, "rules.yaml"), blockKR)
	must(t, os.Symlink(filepath.Base(v1), filepath.Join(dir, "..data")))
	must(t, os.Symlink(filepath.Join("..data", "rules.yaml"), filepath.Join(dir, "rules.yaml")))

	for _, mode := range []string{"directory", "file"} {
		t.Run(mode, func(t *testing.T) {
			ref := dir
			if mode == "file" {
				ref = filepath.Join(dir, "rules.yaml")
			}
			swap := func(content string) {
				v := filepath.Join(dir, fmt.Sprintf("..2026_11_23_10_%02d_00.%d", time.Now().Second(), time.Now().UnixNano()))
				must(t, os.Mkdir(v, 0o755))
				writeFile(t, filepath.Join(v, "rules.yaml"), content)
				tmp := filepath.Join(dir, "..data_tmp")
				must(t, os.Symlink(filepath.Base(v), tmp))
				must(t, os.Rename(tmp, filepath.Join(dir, "..data")))
			}
			swap(blockKR)
			e := boot(t, ref, "")
			if got := e.uploadStatus(t, "kr.example"); got != 403 {
				t.Fatalf("initial: %d", got)
			}
			swap(allowKR)
			e.waitStatus(t, "kr.example", 200)
			swap(blockKR)
			e.waitStatus(t, "kr.example", 403)
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestRulesReloadRelativeConfig: `sekisho run --config sekisho.yaml` from
// the config's own folder watches "." and fsnotify names the file
// "./rules.yaml": the edit is still seen.
func TestRulesReloadRelativeConfig(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	writeFile(t, "rules.yaml", blockKR)
	writeFile(t, "sekisho.yaml", testConfig(t, dir, "rules.yaml", ""))
	e := startConfig(t, dir, "sekisho.yaml")
	if got := e.uploadStatus(t, "kr.example"); got != 403 {
		t.Fatalf("initial: %d", got)
	}
	replaceByRename(t, filepath.Join(dir, "rules.yaml"), allowKR)
	e.waitStatus(t, "kr.example", 200)
}

// TestRulesDirReplaced: the rules directory itself is replaced (a deploy by
// mv, or rsync to a new folder): the swap is seen, and so are edits in the
// new directory afterwards (a watch follows the old inode).
func TestRulesDirReplaced(t *testing.T) {
	dir := t.TempDir()
	rulesDir := filepath.Join(dir, "rules.d")
	must(t, os.Mkdir(rulesDir, 0o755))
	writeFile(t, filepath.Join(rulesDir, "10.yaml"), blockKR)
	e := boot(t, rulesDir, "")
	if got := e.uploadStatus(t, "kr.example"); got != 403 {
		t.Fatalf("initial: %d", got)
	}
	newDir := filepath.Join(dir, "rules.d.new")
	must(t, os.Mkdir(newDir, 0o755))
	writeFile(t, filepath.Join(newDir, "10.yaml"), allowKR)
	must(t, os.Rename(rulesDir, filepath.Join(dir, "rules.d.old")))
	must(t, os.Rename(newDir, rulesDir))
	e.waitStatus(t, "kr.example", 200)
	replaceByRename(t, filepath.Join(rulesDir, "10.yaml"), blockKR)
	e.waitStatus(t, "kr.example", 403)
}

func TestReloadBySignalAndAdmin(t *testing.T) {
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	writeFile(t, rulesPath, blockKR)
	e := boot(t, rulesPath, "")
	// Stop the watcher so that only explicit triggers reload.
	e.inst.reloader.close()
	writeFile(t, rulesPath, allowKR)
	time.Sleep(400 * time.Millisecond)
	if got := e.uploadStatus(t, "kr.example"); got != 403 {
		t.Fatalf("reloaded without a trigger: %d", got)
	}
	code, body := e.admin(t, "POST", "/-/reload")
	if code != 200 {
		t.Fatalf("POST /-/reload: %d %s", code, body)
	}
	if got := e.uploadStatus(t, "kr.example"); got != 200 {
		t.Fatalf("after POST /-/reload: %d", got)
	}
	writeFile(t, rulesPath, "version: 2\n")
	code, body = e.admin(t, "POST", "/-/reload")
	if code != 500 || !strings.Contains(body, rulesPath+":1:10: version 2 is not supported") {
		t.Fatalf("POST /-/reload with a broken file: %d %s", code, body)
	}
	if got := e.uploadStatus(t, "kr.example"); got != 200 {
		t.Fatalf("broken reload replaced the rules: %d", got)
	}
	if code, _ := e.admin(t, "GET", "/-/reload"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /-/reload: %d, want 405", code)
	}
}

func TestGeoDatabaseReload(t *testing.T) {
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	writeFile(t, rulesPath, blockKR)
	e := boot(t, rulesPath, "")
	if got := e.uploadStatus(t, "kr.example"); got != 403 {
		t.Fatalf("initial: %d", got)
	}
	// geoipupdate replaces the file: the KR test range moves to JP.
	moved := map[string]string{}
	for k, v := range geotest.Default {
		moved[k] = v
	}
	moved["127.0.2.0/24"] = "JP"
	b, err := geotest.Build(geotest.CountryCode, moved)
	must(t, err)
	geoPath := e.inst.cfg.Geo.Database
	tmp := geoPath + ".tmp"
	must(t, os.WriteFile(tmp, b, 0o644))
	must(t, os.Rename(tmp, geoPath))
	e.waitStatus(t, "kr.example", 200)

	// A corrupt replacement keeps the old database.
	must(t, os.WriteFile(tmp, []byte("not a database"), 0o644))
	must(t, os.Rename(tmp, geoPath))
	deadline := time.Now().Add(5 * time.Second)
	for !e.metric(t, "sekisho_geo_last_reload_successful 0") {
		if time.Now().After(deadline) {
			t.Fatal("corrupt database not reported")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := e.uploadStatus(t, "kr.example"); got != 200 {
		t.Fatalf("corrupt database replaced the good one: %d", got)
	}
}

func TestStartFailsClearly(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, cfg, want string
	}{
		{"missing geo database", "version: 1\nlisten: 127.0.0.1:0\nadmin_listen: \"\"\ngeo:\n  database: nope.mmdb\n", "nope.mmdb"},
		{"broken rules", "version: 1\nlisten: 127.0.0.1:0\nadmin_listen: \"\"\nrules: bad.yaml\n", "bad.yaml:2:1: unknown field \"rulez\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			writeFile(t, filepath.Join(dir, "bad.yaml"), "version: 1\nrulez: []\n")
			cfgPath := filepath.Join(dir, "c.yaml")
			writeFile(t, cfgPath, tc.cfg)
			var out, errb bytes.Buffer
			code := run([]string{"run", "--config", cfgPath}, &out, &errb)
			if code != 1 || !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("exit %d, stderr:\n%s\nwant it to mention %q", code, errb.String(), tc.want)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, cfg, want string
	}{
		{"empty file", "", "the file is empty; a configuration starts with \"version: 1\""},
		{"leaf validity too long", "version: 1\ntls:\n  leaf_validity: 20000h\n", "tls.leaf_validity: 20000h0m0s is not between 0"},
		{"unknown key", "version: 1\nlisen: 127.0.0.1:3128\n", "c.yaml:2: field lisen not found"},
		{"bad cidr", "version: 1\nclients:\n  allow: [10.0.0.1/8]\n", `has host bits set; did you mean 10.0.0.0/8?`},
		{"bad level", "version: 1\nlog:\n  level: loud\n", `log.level: "loud"`},
		{"no version", "listen: :3128\n", `"version: 1" is required`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "c.yaml")
			writeFile(t, p, tc.cfg)
			_, err := loadConfig(p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestCheckCommand(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	writeFile(t, good, blockKR+`tests:
  - name: korea upload blocked
    request: POST http://kr.example/
    country: KR
    body_bytes: 10
    expect: block
`)
	var out, errb bytes.Buffer
	if code := run([]string{"check", "--rules", good}, &out, &errb); code != 0 {
		t.Fatalf("check good: exit %d\n%s%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "1 passed") || !strings.Contains(out.String(), "OK") {
		t.Errorf("summary: %s", out.String())
	}

	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, blockKR+`tests:
  - name: korea upload allowed
    request: POST http://kr.example/
    country: KR
    body_bytes: 10
    expect: allow
`)
	out.Reset()
	errb.Reset()
	if code := run([]string{"check", "--rules", bad}, &out, &errb); code != 1 {
		t.Fatalf("check with a failing test: exit %d", code)
	}
	if !strings.Contains(errb.String(), bad+`:8: test "korea upload allowed" failed: expected allow, got block`) {
		t.Errorf("stderr:\n%s", errb.String())
	}

	cfg := filepath.Join(dir, "sekisho.yaml")
	writeFile(t, cfg, "version: 1\nrules: good.yaml\n")
	out.Reset()
	if code := run([]string{"check", "--config", cfg}, &out, &errb); code != 0 {
		t.Fatalf("check --config: exit %d %s", code, errb.String())
	}
	if code := run([]string{"check"}, &out, &errb); code != 0 {
		t.Fatalf("check of the built-in rules: exit %d", code)
	}

	// What run opens at start is checked too: what is here must be
	// right; what is missing may exist where sekisho runs (a Secret, a
	// LogsDirectory), so it is a warning.
	writeFile(t, filepath.Join(dir, "bad.hosts"), "not-an-address name\n")
	must(t, os.WriteFile(filepath.Join(dir, "auditdir"), nil, 0o644)) // a file where a folder should be
	for _, tc := range []struct {
		name, cfg string
		code      int
		want      string
	}{
		{"missing CA", "tls:\n  ca_dir: nope-ca\n", 0, "warning tls.ca_dir " + filepath.Join(dir, "nope-ca") + " does not exist here"},
		{"missing hosts file", "resolver:\n  hosts_file: nope.hosts\n", 0, "warning resolver.hosts_file"},
		{"broken hosts file", "resolver:\n  hosts_file: bad.hosts\n", 1, "bad.hosts:1: want an IP address"},
		{"audit folder missing", "log:\n  audit: " + filepath.Join(dir, "no", "audit.jsonl") + "\n", 0, "warning the audit log's folder"},
		{"audit folder is a file", "log:\n  audit: " + filepath.Join(dir, "auditdir", "audit.jsonl") + "\n", 1, "is not a folder"},
	} {
		writeFile(t, cfg, "version: 1\nrules: good.yaml\n"+tc.cfg)
		out.Reset()
		errb.Reset()
		code := run([]string{"check", "--config", cfg}, &out, &errb)
		if code != tc.code || !strings.Contains(out.String()+errb.String(), tc.want) {
			t.Errorf("%s: exit %d, output %q %q; want %d and %q", tc.name, code, out.String(), errb.String(), tc.code, tc.want)
		}
	}
	writeFile(t, cfg, "version: 1\nrules: good.yaml\nlog:\n  audit: "+filepath.Join(dir, "audit.jsonl")+"\n")
	if code := run([]string{"check", "--config", cfg}, &out, &errb); code != 0 {
		t.Errorf("audit log in a writable folder: exit %d %s", code, errb.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "audit.jsonl")); err == nil {
		t.Error("check created the audit log")
	}
}

func TestExplainCommand(t *testing.T) {
	dir := t.TempDir()
	geoPath := geotest.WriteFile(t, dir, geotest.CountryCode, geotest.Default)
	cfg := filepath.Join(dir, "sekisho.yaml")
	writeFile(t, cfg, "version: 1\ngeo:\n  database: "+geoPath+"\n  internal_networks: [10.0.0.0/8]\ndestinations:\n  allow: [127.0.0.0/8]\n")
	var out, errb bytes.Buffer
	code := explainMain([]string{"--config", cfg, "--country", "KR", "POST", "http://kr.example/upload", "--body-bytes", "2MiB", "--content-type", "image/jpeg"}, &out, &errb, proxytest.DefaultResolver())
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"dials", "127.0.2.1:80", "KR → foreign", "BLOCK by rule block-foreign-uploads", "(built-in default rules):"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("explain output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	code = explainMain([]string{"--config", cfg, "--country", "US", "--client", "10.1.2.3", "POST", "https://upload.line-scdn.net/x", "--body-bytes", "1KiB"}, &out, &errb, proxytest.DefaultResolver())
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"line (LINE)", "tunnel", "1MiB of upload", "group other"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("explain output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	code = explainMain([]string{"GET", "http://metadata.example/"}, &out, &errb, proxytest.DefaultResolver())
	if code != 0 || !strings.Contains(out.String(), "REFUSED") {
		t.Errorf("metadata: exit %d\n%s", code, out.String())
	}
	// --country takes "unknown" and "internal" as well as ISO codes.
	for _, c := range []string{"unknown", "Internal", "kr"} {
		out.Reset()
		errb.Reset()
		if code := explainMain([]string{"--country", c, "GET", "http://kr.example/"}, &out, &errb, proxytest.DefaultResolver()); code != 0 {
			t.Errorf("--country %s: exit %d: %s", c, code, errb.String())
		}
	}
	// A POST without --body-bytes is an upload of unknown size, not a
	// bodyless request that the default rules would let through.
	out.Reset()
	code = explainMain([]string{"--country", "KR", "POST", "http://203.0.113.9/upload"}, &out, &errb, proxytest.DefaultResolver())
	if code != 0 || !strings.Contains(out.String(), "BLOCK") || !strings.Contains(out.String(), "size unknown") {
		t.Errorf("POST without --body-bytes: exit %d\n%s", code, out.String())
	}
}

func TestVersionAndHelp(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "sekisho dev") {
		t.Errorf("version: %d %q", code, out.String())
	}
	for _, cmd := range []string{"run", "check", "explain"} {
		errb.Reset()
		if code := run([]string{cmd, "--help"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "Usage: sekisho "+cmd) {
			t.Errorf("%s --help: exit %d\n%s", cmd, code, errb.String())
		}
	}
	if code := run([]string{"frobnicate"}, &out, &errb); code != 2 {
		t.Errorf("unknown command: exit %d", code)
	}
	if code := run(nil, &out, &errb); code != 2 {
		t.Errorf("no command: exit %d", code)
	}
}

// TestAuditLogReopenedOnSIGHUP: logrotate moves the audit log away and sends
// SIGHUP; the next lines go to a new file at the configured path.
func TestAuditLogReopenedOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	sites := proxytest.NewSites(t)
	auditPath := filepath.Join(dir, "audit.jsonl")
	geoPath := geotest.WriteFile(t, dir, geotest.CountryCode, geotest.Default)
	writeFile(t, filepath.Join(dir, "sekisho.yaml"), fmt.Sprintf(`version: 1
listen: 127.0.0.1:0
admin_listen: ""
geo:
  database: %s
destinations:
  allow: [127.0.0.0/8]
log:
  audit: audit.jsonl
`, geoPath))
	cfg, err := loadConfig(filepath.Join(dir, "sekisho.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	hup := make(chan os.Signal, 1)
	inst, err := start(context.Background(), cfg, options{resolver: proxytest.DefaultResolver(), hup: hup})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = inst.Shutdown(context.Background()) })
	e := &env{inst: inst, sites: sites}
	e.uploadStatus(t, "jp.example")
	waitFile := func(path, want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			b, _ := os.ReadFile(path)
			if strings.Count(string(b), want) == 1 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: want one line with %q, have:\n%s", path, want, b)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFile(auditPath, `"kind":"request"`)
	if err := os.Rename(auditPath, auditPath+".1"); err != nil {
		t.Fatal(err)
	}
	hup <- syscall.SIGHUP
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(auditPath); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP did not reopen the audit log")
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.uploadStatus(t, "jp.example")
	waitFile(auditPath, `"kind":"request"`)
	waitFile(auditPath+".1", `"kind":"request"`)
}

func TestResolverHostsFile(t *testing.T) {
	dir := t.TempDir()
	hosts := filepath.Join(dir, "hosts")
	writeFile(t, hosts, "# staging names\n127.0.1.1  Intranet.Example  files.intranet.example\n127.0.2.1 korea.example # abroad\n")
	rulesPath := filepath.Join(dir, "rules.yaml")
	writeFile(t, rulesPath, blockKR)
	e := boot(t, rulesPath, "resolver:\n  hosts_file: "+hosts+"\n")
	if got := e.uploadStatus(t, "intranet.example"); got != 200 {
		t.Errorf("a name from the hosts file: %d, want 200 (JP site)", got)
	}
	if got := e.uploadStatus(t, "korea.example"); got != 403 {
		t.Errorf("an upload to a hosts-file name in KR: %d, want 403", got)
	}
	if got := e.uploadStatus(t, "jp.example"); got != 200 {
		t.Errorf("names not in the file still resolve: %d", got)
	}
	writeFile(t, hosts, "not-an-address name\n")
	if _, err := loadHostsFile(hosts, nil); err == nil || !strings.Contains(err.Error(), hosts+":1:") {
		t.Errorf("bad hosts file: %v", err)
	}
}

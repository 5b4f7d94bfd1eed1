package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fetch GETs url directly (no proxy) with extra headers.
func fetch(t *testing.T, url string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// blockPage uploads to the KR test site and returns the block page.
func (e *env) blockPage(t *testing.T) string {
	t.Helper()
	resp, err := e.client().Post(e.sites.URL("kr.example", "/upload"), "text/plain", strings.NewReader("residents' data"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

const pacSection = `helpdesk: 情報政策課 (内線 1234)
pac:
  proxies: [proxy1.city.example.lg.jp:3128, proxy2.city.example.lg.jp:3128]
  direct_domains: [city.example.lg.jp]
  direct_networks: [10.0.0.0/8]
  max_age: 1m
`

// TestPACReloadByFileChange: the PAC file (on the admin listener and on the
// proxy port) and the helpdesk follow sekisho.yaml when it is saved; other
// changes are logged as needing a restart; a broken file keeps the
// previous PAC file and is reported like a broken rules file.
func TestPACReloadByFileChange(t *testing.T) {
	dir := t.TempDir()
	rulesPath := filepath.Join(dir, "rules.yaml")
	writeFile(t, rulesPath, blockKR)
	e := boot(t, rulesPath, pacSection)
	cfgPath := filepath.Join(e.dir, "sekisho.yaml")
	orig, err := os.ReadFile(cfgPath)
	must(t, err)

	admin := "http://" + e.inst.AdminAddr + "/proxy.pac"
	resp, pac := fetch(t, admin)
	etag := resp.Header.Get("ETag")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ns-proxy-autoconfig" || resp.Header.Get("Cache-Control") != "max-age=60" || etag == "" ||
		!strings.Contains(pac, `"PROXY proxy1.city.example.lg.jp:3128; PROXY proxy2.city.example.lg.jp:3128"`) ||
		!strings.Contains(pac, `dnsDomainIs(h, ".city.example.lg.jp")`) || !strings.Contains(pac, `isInNet(h, "10.0.0.0", "255.0.0.0")`) {
		t.Fatalf("GET %s: %d %v\n%s", admin, resp.StatusCode, resp.Header, pac)
	}
	if resp, _ := fetch(t, admin, "If-None-Match", etag); resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match on the admin listener: %d", resp.StatusCode)
	}
	if resp, body := fetch(t, "http://"+e.inst.ProxyAddrs[0]+"/wpad.dat"); resp.StatusCode != 200 || body != pac {
		t.Errorf("the proxy port serves another PAC file: %d\n%s", resp.StatusCode, body)
	}
	if page := e.blockPage(t); !strings.Contains(page, "情報政策課 (内線 1234)") {
		t.Error("the block page lacks the helpdesk")
	}

	// Saved with a new proxy list, a new helpdesk and a new idle timeout.
	changed := strings.Replace(string(orig), "proxy2.city.example.lg.jp:3128", "proxy3.city.example.lg.jp:3128", 1)
	changed = strings.Replace(changed, "情報政策課 (内線 1234)", "情報政策課 (内線 5678)", 1)
	changed += "limits:\n  idle_timeout: 90s\n"
	replaceByRename(t, cfgPath, changed)
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, body := fetch(t, admin, "If-None-Match", etag)
		if resp.StatusCode == 200 && strings.Contains(body, "proxy3.city.example.lg.jp:3128") {
			if resp.Header.Get("ETag") == etag {
				t.Error("the ETag did not change with the PAC file")
			}
			etag, pac = resp.Header.Get("ETag"), body
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the PAC file was not regenerated after sekisho.yaml changed:\n%s\nlog:\n%s", body, e.errs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, body := fetch(t, "http://"+e.inst.ProxyAddrs[0]+"/proxy.pac"); body != pac {
		t.Error("the proxy port still serves the old PAC file")
	}
	if page := e.blockPage(t); !strings.Contains(page, "情報政策課 (内線 5678)") {
		t.Error("the block page does not show the new helpdesk")
	}
	log := e.errs.String()
	if !strings.Contains(log, "configuration reloaded") || !strings.Contains(log, "restart needed") || !strings.Contains(log, "fields=limits") {
		t.Errorf("the log does not say what was applied and what needs a restart:\n%s", log)
	}
	if !e.metric(t, `sekisho_config_reloads_total{result="success"} 1`) {
		t.Error("the reload is not counted")
	}

	// A broken file: reported, and the PAC file in force stays.
	replaceByRename(t, cfgPath, changed+"pac_typo: true\n")
	deadline = time.Now().Add(5 * time.Second)
	for !e.metric(t, "sekisho_config_last_reload_successful 0") {
		if time.Now().After(deadline) {
			t.Fatalf("a broken sekisho.yaml was not reported:\n%s", e.errs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if resp, body := fetch(t, admin); resp.Header.Get("ETag") != etag || body != pac {
		t.Error("a broken sekisho.yaml replaced the PAC file")
	}
	_, status := e.admin(t, "GET", "/-/status")
	if !strings.Contains(status, cfgPath+`:22: field pac_typo not found`) {
		t.Errorf("/-/status lacks the file:line error:\n%s", status)
	}
	code, body := e.admin(t, "POST", "/-/reload")
	if code != 500 || !strings.Contains(body, "configuration: "+cfgPath+":22: field pac_typo not found") {
		t.Errorf("POST /-/reload with a broken sekisho.yaml: %d %s", code, body)
	}
	if !strings.Contains(e.errs.String(), "configuration reload failed; the previous PAC file and helpdesk stay in force") {
		t.Errorf("the failure is not logged:\n%s", e.errs.String())
	}

	// An invalid PAC setting is a broken file too.
	replaceByRename(t, cfgPath, strings.Replace(changed, "proxy3.city.example.lg.jp:3128", "proxy3.city.example.lg.jp", 1))
	deadline = time.Now().Add(5 * time.Second)
	for !strings.Contains(e.errs.String(), `pac.proxies: \"proxy3.city.example.lg.jp\" is not host:port`) {
		if time.Now().After(deadline) {
			t.Fatalf("an invalid pac section was not reported:\n%s", e.errs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Back to the file in force: the failure is over.
	replaceByRename(t, cfgPath, changed)
	deadline = time.Now().Add(5 * time.Second)
	for !e.metric(t, "sekisho_config_last_reload_successful 1") {
		if time.Now().After(deadline) {
			t.Fatal("restoring sekisho.yaml did not clear the failure")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPACReloadBySignal: SIGHUP (here: POST /-/reload, the same loop)
// re-reads sekisho.yaml even with file watching off.
func TestPACReloadBySignal(t *testing.T) {
	e := boot(t, "", pacSection)
	e.inst.reloader.close()
	cfgPath := filepath.Join(e.dir, "sekisho.yaml")
	orig, err := os.ReadFile(cfgPath)
	must(t, err)
	writeFile(t, cfgPath, strings.Replace(string(orig), "max_age: 1m", "max_age: 10m\n  fallback_direct: true", 1))
	if code, body := e.admin(t, "POST", "/-/reload"); code != 200 {
		t.Fatalf("POST /-/reload: %d %s", code, body)
	}
	resp, pac := fetch(t, "http://"+e.inst.AdminAddr+"/proxy.pac")
	if resp.Header.Get("Cache-Control") != "max-age=600" || !strings.Contains(pac, `PROXY proxy2.city.example.lg.jp:3128; DIRECT"`) {
		t.Errorf("after POST /-/reload: %v\n%s", resp.Header, pac)
	}
}

// TestPACDefaultProxies: without pac.proxies the PAC file names the
// proxy's own listener.
func TestPACDefaultProxies(t *testing.T) {
	e := boot(t, "", "")
	_, pac := fetch(t, "http://"+e.inst.AdminAddr+"/proxy.pac")
	if want := `var proxies = "PROXY ` + e.inst.ProxyAddrs[0] + `";`; !strings.Contains(pac, want) {
		t.Errorf("PAC lacks %q:\n%s", want, pac)
	}
	// The proxy port answers a browser that fetches the PAC file from a
	// network outside clients.allow too (its own listener here).
	c, err := net.Dial("tcp", e.inst.ProxyAddrs[0])
	must(t, err)
	defer c.Close()
	fmt.Fprintf(c, "GET /proxy.pac HTTP/1.1\r\nHost: %s\r\n\r\n", e.inst.ProxyAddrs[0])
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("GET /proxy.pac on the proxy port: %v %v", resp, err)
	}
}

func TestPACDefaultProxiesForWildcards(t *testing.T) {
	host := func() string { return "proxy1.city.example.lg.jp" }
	for _, tc := range []struct {
		listen []string
		want   string
	}{
		{[]string{"127.0.0.1:3128"}, "127.0.0.1:3128"},
		{[]string{"0.0.0.0:3128"}, "proxy1.city.example.lg.jp:3128"},
		{[]string{"[::]:3128"}, "proxy1.city.example.lg.jp:3128"},
		{[]string{":3128"}, "proxy1.city.example.lg.jp:3128"},
		{[]string{"[::]:3128", "0.0.0.0:3128", "10.0.0.5:8080"}, "proxy1.city.example.lg.jp:3128 10.0.0.5:8080"},
	} {
		if got := strings.Join(defaultPACProxies(tc.listen, host), " "); got != tc.want {
			t.Errorf("defaultPACProxies(%v) = %q, want %q", tc.listen, got, tc.want)
		}
	}
	if h := advertisedHost(); h == "" {
		t.Errorf("advertisedHost() = %q", h)
	}
}

func TestPACConfigErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, cfg, want string
	}{
		{"proxy without port", "version: 1\npac:\n  proxies: [proxy1.example]\n", `pac.proxies: "proxy1.example" is not host:port (such as proxy1.city.example.lg.jp:3128)`},
		{"wildcard proxy", "version: 1\npac:\n  proxies: [\"0.0.0.0:3128\"]\n", `pac.proxies: "0.0.0.0:3128" is a wildcard address`},
		{"bad domain", "version: 1\npac:\n  direct_domains: [\"a b\"]\n", `pac.direct_domains: "a b" is not a domain name`},
		{"bad network", "version: 1\npac:\n  direct_networks: [10.0.0.1/8]\n", `has host bits set; did you mean 10.0.0.0/8?`},
		{"unknown key", "version: 1\npac:\n  proxy: [a:1]\n", "c.yaml:3: field proxy not found"},
		{"negative max age", "version: 1\npac:\n  max_age: -1m\n", "pac.max_age must not be negative"},
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

func TestRestartFields(t *testing.T) {
	a, b := defaultConfig(), defaultConfig()
	b.Helpdesk = "new"
	b.PAC.FallbackDirect = true
	if f := restartFields(a, b); len(f) != 0 {
		t.Errorf("live fields reported as needing a restart: %v", f)
	}
	b.Listen = stringList{"0.0.0.0:3128"}
	b.Limits.IdleTimeout = time.Minute
	b.path = "elsewhere"
	if f := strings.Join(restartFields(a, b), ","); f != "listen,limits" {
		t.Errorf("restartFields = %s, want listen,limits", f)
	}
}

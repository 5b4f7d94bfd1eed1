package pages

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cityPAC is a city hall's PAC configuration: two proxies, the LGWAN and
// city domains, the private and LGWAN networks.
func cityPAC() PACConfig {
	return PACConfig{
		Proxies:       []string{"proxy1.city.example.lg.jp:3128", "proxy2.city.example.lg.jp:3128"},
		DirectDomains: []string{"city.example.lg.jp", "*.lgwan.example", ".intra.example", "Bücher.example"},
		DirectNetworks: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12"),
			netip.MustParsePrefix("192.168.0.0/16"), netip.MustParsePrefix("fd00::/8"),
		},
		PlainHostnamesDirect: true,
	}
}

func findNode(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("node"); err == nil {
		return p
	}
	if os.Getenv("SEKISHO_REQUIRE_TOOLS") == "1" {
		t.Fatal("node is not installed (apt-get install nodejs) and SEKISHO_REQUIRE_TOOLS=1")
	}
	t.Skip("node is not installed (apt-get install nodejs); SEKISHO_REQUIRE_TOOLS=1 makes this a failure")
	return ""
}

type pacCase struct {
	URL  string `json:"url"`
	Host string `json:"host"`
}

// evalPAC runs the PAC file in Node (testdata/pacshim.js: the standard
// helper functions, and a record of every call that would resolve a name).
func evalPAC(t *testing.T, node string, pac []byte, cases []pacCase, extra ...string) (results, dns []string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "proxy.pac")
	if err := os.WriteFile(file, pac, 0o644); err != nil {
		t.Fatal(err)
	}
	in, _ := json.Marshal(cases)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{filepath.Join("testdata", "pacshim.js"), file}, extra...)...)
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v\n%s\nPAC:\n%s", err, stderr.String(), pac)
	}
	var res struct {
		Results []string `json:"results"`
		DNS     []string `json:"dns"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("node output %q: %v", out, err)
	}
	return res.Results, res.DNS
}

// TestPACEvaluatedByNode runs the generated PAC file in a real JavaScript
// engine, with the helpers browsers give it, for the kinds of URL a city
// hall's browsers meet — and checks that it never asks for DNS.
func TestPACEvaluatedByNode(t *testing.T) {
	node := findNode(t)
	const proxies = "PROXY proxy1.city.example.lg.jp:3128; PROXY proxy2.city.example.lg.jp:3128"
	tests := []struct {
		name, url, host string
		want            string // with isInNetEx (Chrome, Edge)
		wantNoEx        string // without (Firefox); "" = same as want
	}{
		{"intranet name", "http://www.city.example.lg.jp/", "www.city.example.lg.jp", "DIRECT", ""},
		{"intranet domain itself", "https://city.example.lg.jp/", "city.example.lg.jp", "DIRECT", ""},
		{"intranet name, odd spelling", "http://WWW.City.Example.LG.JP./", "WWW.City.Example.LG.JP.", "DIRECT", ""},
		{"suffix without a dot boundary", "http://evilcity.example.lg.jp/", "evilcity.example.lg.jp", proxies, ""},
		{"subdomains-only entry, subdomain", "http://portal.lgwan.example/", "portal.lgwan.example", "DIRECT", ""},
		{"subdomains-only entry, the domain", "http://lgwan.example/", "lgwan.example", proxies, ""},
		{"leading-dot entry, subdomain", "http://wiki.intra.example/", "wiki.intra.example", "DIRECT", ""},
		{"leading-dot entry, the domain", "http://intra.example/", "intra.example", proxies, ""},
		{"IDN entry (punycode from the browser)", "http://www.xn--bcher-kva.example/", "www.xn--bcher-kva.example", "DIRECT", ""},
		{"intranet IP", "http://10.1.2.3/", "10.1.2.3", "DIRECT", ""},
		{"intranet IP, 172.16/12", "http://172.31.255.1:8080/", "172.31.255.1", "DIRECT", ""},
		{"just outside 172.16/12", "http://172.32.0.1/", "172.32.0.1", proxies, ""},
		{"intranet IP, 192.168/16", "http://192.168.10.20/", "192.168.10.20", "DIRECT", ""},
		{"internet IP literal", "http://203.0.113.7/upload", "203.0.113.7", proxies, ""},
		{"loopback", "http://127.0.0.1:8080/", "127.0.0.1", "DIRECT", ""},
		{"localhost", "http://localhost:8080/", "localhost", "DIRECT", ""},
		{"intranet IPv6 literal", "http://[fd12::1]/", "fd12::1", "DIRECT", proxies},
		{"intranet IPv6 literal in brackets", "http://[fd12::1]/", "[fd12::1]", "DIRECT", proxies},
		{"internet IPv6 literal", "http://[2001:db8::1]/", "2001:db8::1", proxies, ""},
		{"IPv6 loopback", "http://[::1]/", "::1", "DIRECT", proxies},
		{"plain hostname", "http://kintai/", "kintai", "DIRECT", ""},
		{"internet host", "https://www.google.com/", "www.google.com", proxies, ""},
		{"LINE", "https://obs.line-scdn.net/r/talk", "obs.line-scdn.net", proxies, ""},
		{"name that starts like an IP", "http://10.1.2.3.nip.example/", "10.1.2.3.nip.example", proxies, ""},
		{"the proxy itself (its pages)", "http://proxy1.city.example.lg.jp:3128/selftest", "proxy1.city.example.lg.jp", "DIRECT", ""},
		{"a self-test host", "http://pac-check.selftest.sekisho.invalid/", "pac-check.selftest.sekisho.invalid", proxies, ""},
	}
	p, err := NewPAC(cityPAC())
	if err != nil {
		t.Fatal(err)
	}
	var cases []pacCase
	for _, tt := range tests {
		cases = append(cases, pacCase{tt.url, tt.host})
	}
	for _, variant := range []string{"with isInNetEx", "without isInNetEx"} {
		t.Run(variant, func(t *testing.T) {
			var extra []string
			if variant == "without isInNetEx" {
				extra = []string{"--no-isInNetEx"}
			}
			got, dns := evalPAC(t, node, p.Body(), cases, extra...)
			if len(dns) > 0 {
				t.Errorf("the PAC file asked for DNS: %v", dns)
			}
			for i, tt := range tests {
				want := tt.want
				if variant == "without isInNetEx" && tt.wantNoEx != "" {
					want = tt.wantNoEx
				}
				if got[i] != want {
					t.Errorf("%s: FindProxyForURL(%q, %q) = %q, want %q", tt.name, tt.url, tt.host, got[i], want)
				}
			}
		})
	}

	// The shim notices a PAC that resolves: the silence above means
	// something.
	_, dns := evalPAC(t, node, []byte(`function FindProxyForURL(url, host) { return isInNet(host, "10.0.0.0", "255.0.0.0") ? "DIRECT" : "PROXY p:1"; }`),
		[]pacCase{{"http://example.com/", "example.com"}})
	if len(dns) != 1 {
		t.Errorf("the shim did not record isInNet on a name: %v", dns)
	}
}

func TestPACFallbackAndPlainNames(t *testing.T) {
	node := findNode(t)
	c := PACConfig{Proxies: []string{"10.0.0.5:3128"}}
	p, err := NewPAC(c)
	if err != nil {
		t.Fatal(err)
	}
	cases := []pacCase{{"http://kintai/", "kintai"}, {"https://example.com/", "example.com"}, {"http://10.0.0.5:3128/", "10.0.0.5"}, {"http://10.0.0.6/", "10.0.0.6"}}
	got, dns := evalPAC(t, node, p.Body(), cases)
	want := []string{"PROXY 10.0.0.5:3128", "PROXY 10.0.0.5:3128", "DIRECT", "PROXY 10.0.0.5:3128"}
	if strings.Join(got, "|") != strings.Join(want, "|") || len(dns) > 0 {
		t.Errorf("defaults: got %q (dns %v), want %q", got, dns, want)
	}
	if strings.Contains(string(p.Body()), "isPlainHostName") {
		t.Error("plain host names are sent directly although plain_hostnames_direct is off")
	}

	c.FallbackDirect = true
	p, err = NewPAC(c)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = evalPAC(t, node, p.Body(), cases[1:2])
	if got[0] != "PROXY 10.0.0.5:3128; DIRECT" {
		t.Errorf("fallback_direct: %q", got[0])
	}
}

func TestPACNoSilentDirect(t *testing.T) {
	p, err := NewPAC(cityPAC())
	if err != nil {
		t.Fatal(err)
	}
	body := string(p.Body())
	if strings.Contains(body, "; DIRECT") {
		t.Error("the proxy list ends in DIRECT although fallback_direct is off")
	}
	for _, bad := range []string{"dnsResolve", "isResolvable", "myIpAddress"} {
		if strings.Contains(body, bad+"(") {
			t.Errorf("the PAC calls %s", bad)
		}
	}
	for i, c := range body {
		if c > 0x7e || (c < 0x20 && c != '\n') {
			t.Fatalf("byte %d of the PAC is %q: it must be plain ASCII", i, c)
		}
	}
}

func TestPACServe(t *testing.T) {
	c := cityPAC()
	c.MaxAge = 10 * time.Minute
	p, err := NewPAC(c)
	if err != nil {
		t.Fatal(err)
	}
	get := func(method string, hdr ...string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, "/proxy.pac", nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		p.ServeHTTP(w, r)
		return w
	}
	w := get("GET")
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/x-ns-proxy-autoconfig" ||
		w.Header().Get("Cache-Control") != "max-age=600" || !bytes.Equal(w.Body.Bytes(), p.Body()) {
		t.Fatalf("GET: %d %v\n%s", w.Code, w.Header(), w.Body.String())
	}
	etag := w.Header().Get("ETag")
	if etag != p.ETag() || !strings.HasPrefix(etag, `"`) || len(etag) != 34 {
		t.Errorf("ETag %q, want a strong tag of the content (%q)", etag, p.ETag())
	}
	for _, inm := range []string{etag, "W/" + etag, `"other", ` + etag, "*"} {
		w := get("GET", "If-None-Match", inm)
		if w.Code != http.StatusNotModified || w.Body.Len() != 0 || w.Header().Get("ETag") != etag || w.Header().Get("Cache-Control") != "max-age=600" {
			t.Errorf("If-None-Match %s: %d %v", inm, w.Code, w.Header())
		}
	}
	if w := get("GET", "If-None-Match", `"stale"`); w.Code != 200 {
		t.Errorf("stale If-None-Match: %d", w.Code)
	}
	if w := get("HEAD"); w.Code != 200 || w.Body.Len() != 0 || w.Header().Get("ETag") != etag {
		t.Errorf("HEAD: %d, %d body bytes", w.Code, w.Body.Len())
	}
	if w := get("POST"); w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %d %v", w.Code, w.Header())
	}

	// Same configuration, same file and tag; another configuration, another.
	p2, _ := NewPAC(c)
	if p2.ETag() != p.ETag() {
		t.Error("the ETag differs for the same configuration")
	}
	c.DirectDomains = append(c.DirectDomains, "new.example")
	p3, _ := NewPAC(c)
	if p3.ETag() == p.ETag() {
		t.Error("the ETag did not change with the content")
	}
	if p0, _ := NewPAC(PACConfig{Proxies: []string{"p:1"}}); !strings.Contains(string(p0.cache), "max-age=300") {
		t.Errorf("default max-age: %q", p0.cache)
	}
}

func TestPACErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*PACConfig)
		want string
	}{
		{"no proxy", func(c *PACConfig) { c.Proxies = nil }, "proxies: at least one proxy address is needed"},
		{"no port", func(c *PACConfig) { c.Proxies = []string{"proxy1.example"} }, `proxies: "proxy1.example" is not host:port (such as proxy1.city.example.lg.jp:3128)`},
		{"port zero", func(c *PACConfig) { c.Proxies = []string{"proxy1.example:0"} }, `proxies: "proxy1.example:0" is not host:port`},
		{"injection", func(c *PACConfig) { c.Proxies = []string{`p:1"; return "DIRECT`} }, `proxies: "p:1\"; return \"DIRECT" is not host:port`},
		{"wildcard address", func(c *PACConfig) { c.Proxies = []string{"0.0.0.0:3128"} }, `proxies: "0.0.0.0:3128" is a wildcard address; browsers need an address they can connect to`},
		{"twice", func(c *PACConfig) { c.Proxies = []string{"p:1", "P:1"} }, `proxies: "P:1" is listed twice`},
		{"bad domain", func(c *PACConfig) { c.DirectDomains = []string{"exa mple.jp"} }, `direct_domains: "exa mple.jp" is not a domain name (write example.lg.jp, or *.example.lg.jp for its subdomains only)`},
		{"inner wildcard", func(c *PACConfig) { c.DirectDomains = []string{"a.*.example"} }, `direct_domains: "a.*.example" is not a domain name`},
		{"address as domain", func(c *PACConfig) { c.DirectDomains = []string{"10.0.0.1"} }, `direct_domains: "10.0.0.1" is an address; list it under direct_networks`},
		{"negative max age", func(c *PACConfig) { c.MaxAge = -time.Second }, "max_age must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cityPAC()
			tt.edit(&c)
			_, err := NewPAC(c)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
}

func TestPACIsProxy(t *testing.T) {
	p, err := NewPAC(PACConfig{Proxies: []string{"Proxy1.City.Example.lg.jp:3128", "10.0.0.5:8080", "[fd00::5]:3128"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.Proxies(), " "); got != "proxy1.city.example.lg.jp:3128 10.0.0.5:8080 [fd00::5]:3128" {
		t.Errorf("Proxies() = %s", got)
	}
	for authority, want := range map[string]bool{
		"proxy1.city.example.lg.jp:3128":  true,
		"PROXY1.city.example.lg.jp.:3128": true,
		"proxy1.city.example.lg.jp":       false, // port 80
		"proxy1.city.example.lg.jp:3129":  false,
		"10.0.0.5:8080":                   true,
		"[fd00::5]:3128":                  true,
		"example.com:3128":                false,
		"":                                false,
	} {
		if got := p.IsProxy(authority); got != want {
			t.Errorf("IsProxy(%q) = %v, want %v", authority, got, want)
		}
	}
	// It runs for every proxied request.
	if n := testing.AllocsPerRun(100, func() { p.IsProxy("jp.example:8080") }); n != 0 {
		t.Errorf("IsProxy allocates %v times per call", n)
	}
	if !strings.Contains(string(p.Body()), `var proxies = "PROXY proxy1.city.example.lg.jp:3128; PROXY 10.0.0.5:8080; PROXY [fd00::5]:3128";`) {
		t.Errorf("proxy list:\n%s", p.Body())
	}
}

package deploy

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// decodeJSONStrict decodes a policy file, rejecting fields the struct
// does not name: a misspelled policy is silently ignored by browsers.
func decodeJSONStrict(t *testing.T, path string, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(readFile(t, path)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestChromiumPolicies(t *testing.T) {
	var p struct {
		QuicAllowed      *bool   `json:"QuicAllowed"`
		DnsOverHttpsMode *string `json:"DnsOverHttpsMode"`
	}
	decodeJSONStrict(t, "firewall/chromium-managed-policies.json", &p)
	if p.QuicAllowed == nil || *p.QuicAllowed || p.DnsOverHttpsMode == nil || *p.DnsOverHttpsMode != "off" {
		t.Errorf("want QuicAllowed false and DnsOverHttpsMode \"off\": %+v", p)
	}
}

func TestFirefoxPolicies(t *testing.T) {
	var p struct {
		Policies struct {
			// Firefox trusts the roots the OS trusts: the sekisho CA that
			// Group Policy or a configuration profile installed.
			Certificates struct {
				ImportEnterpriseRoots *bool `json:"ImportEnterpriseRoots"`
			} `json:"Certificates"`
			DNSOverHTTPS struct {
				Enabled *bool `json:"Enabled"`
				Locked  *bool `json:"Locked"`
			} `json:"DNSOverHTTPS"`
			Preferences map[string]struct {
				Value  any    `json:"Value"`
				Status string `json:"Status"`
			} `json:"Preferences"`
		} `json:"policies"`
	}
	decodeJSONStrict(t, "firewall/firefox-policies.json", &p)
	doh := p.Policies.DNSOverHTTPS
	if doh.Enabled == nil || *doh.Enabled || doh.Locked == nil || !*doh.Locked {
		t.Errorf("DNSOverHTTPS: want Enabled false, Locked true: %+v", doh)
	}
	if r := p.Policies.Certificates.ImportEnterpriseRoots; r == nil || !*r {
		t.Error("Certificates.ImportEnterpriseRoots: want true (trust the sekisho CA the OS trusts)")
	}
	h3 := p.Policies.Preferences["network.http.http3.enable"]
	if h3.Value != false || h3.Status != "locked" {
		t.Errorf("network.http.http3.enable: want false, locked: %+v", h3)
	}
}

func TestWindowsRegistryPolicies(t *testing.T) {
	raw := readFile(t, "firewall/sekisho-browser-policies.reg")
	for i, b := range raw {
		if b >= 0x80 {
			t.Fatalf("byte %d is not ASCII: regedit reads an ASCII .reg file as the ANSI code page", i)
		}
	}
	text := string(raw)
	if !strings.HasPrefix(text, "Windows Registry Editor Version 5.00\r\n") {
		t.Fatal("a .reg file starts with \"Windows Registry Editor Version 5.00\" and uses CRLF")
	}
	if strings.Count(text, "\n") != strings.Count(text, "\r\n") {
		t.Error("line endings must all be CRLF")
	}
	values := map[string]string{} // `KEY\name` → data
	key := ""
	for _, line := range strings.Split(text, "\r\n") {
		switch {
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			key = line[1 : len(line)-1]
		case strings.HasPrefix(line, `"`):
			name, data, ok := strings.Cut(line, "=")
			if !ok || key == "" {
				t.Fatalf("bad line %q", line)
			}
			values[key+`\`+strings.Trim(name, `"`)] = data
		}
	}
	for k, want := range map[string]string{
		`HKEY_LOCAL_MACHINE\SOFTWARE\Policies\Google\Chrome\QuicAllowed`:                `dword:00000000`,
		`HKEY_LOCAL_MACHINE\SOFTWARE\Policies\Google\Chrome\DnsOverHttpsMode`:           `"off"`,
		`HKEY_LOCAL_MACHINE\SOFTWARE\Policies\Microsoft\Edge\QuicAllowed`:               `dword:00000000`,
		`HKEY_LOCAL_MACHINE\SOFTWARE\Policies\Microsoft\Edge\DnsOverHttpsMode`:          `"off"`,
		`HKEY_LOCAL_MACHINE\SOFTWARE\Policies\Microsoft\Windows NT\DNSClient\DoHPolicy`: `dword:00000001`,
	} {
		if values[k] != want {
			t.Errorf("%s = %q, want %s", k, values[k], want)
		}
	}
}

// nftSet returns the elements of `set NAME { ... elements = { ... } }`.
func nftSet(t *testing.T, text, name string) []netip.Prefix {
	t.Helper()
	m := regexp.MustCompile(`(?s)set ` + name + ` \{.*?elements = \{(.*?)\}`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("sekisho-sidedoors.nft: no set %s with elements", name)
	}
	var out []netip.Prefix
	for _, line := range strings.Split(m[1], "\n") {
		line, _, _ = strings.Cut(line, "#")
		for _, e := range strings.Split(line, ",") {
			if e = strings.TrimSpace(e); e == "" {
				continue
			}
			p, err := netip.ParsePrefix(e)
			if err != nil {
				a, err2 := netip.ParseAddr(e)
				if err2 != nil {
					t.Fatalf("set %s: %q is not an address or network", name, e)
				}
				p = netip.PrefixFrom(a, a.BitLen())
			}
			out = append(out, p)
		}
	}
	return out
}

func TestNftablesSideDoors(t *testing.T) {
	text := string(readFile(t, "firewall/sekisho-sidedoors.nft"))
	// The side doors, for both address families.
	for _, rule := range []string{
		`ip saddr @clients_v4 udp dport 443 counter reject`,
		`ip6 saddr @clients_v6 udp dport 443 counter reject`,
		`ip saddr @clients_v4 meta l4proto { tcp, udp } th dport 853 counter reject`,
		`ip6 saddr @clients_v6 meta l4proto { tcp, udp } th dport 853 counter reject`,
		`ip saddr @clients_v4 ip daddr @doh_v4 tcp dport 443 counter reject with tcp reset`,
		`ip6 saddr @clients_v6 ip6 daddr @doh_v6 tcp dport 443 counter reject with tcp reset`,
	} {
		if !strings.Contains(text, rule) {
			t.Errorf("sekisho-sidedoors.nft lacks %q", rule)
		}
	}
	// Reloadable: it replaces only its own table.
	if !strings.Contains(text, "table inet sekisho_sidedoors\ndelete table inet sekisho_sidedoors\n") {
		t.Error("sekisho-sidedoors.nft should declare then delete its table, so that nft -f replaces it idempotently")
	}

	// Every resolver address sekisho's DoH rules block is blocked by the
	// firewall too.
	fw := append(nftSet(t, text, "doh_v4"), nftSet(t, text, "doh_v6")...)
	var rules struct {
		Rules []struct {
			Name     string   `json:"name"`
			Networks []string `json:"networks"`
		} `json:"rules"`
	}
	if err := yaml.Unmarshal(readFile(t, "firewall/sekisho-rules-doh.yaml"), &rules); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, r := range rules.Rules {
		for _, s := range r.Networks {
			a, err := netip.ParseAddr(s)
			if err != nil {
				t.Fatalf("rule %s: %q: %v", r.Name, s, err)
			}
			n++
			covered := false
			for _, p := range fw {
				covered = covered || p.Contains(a)
			}
			if !covered {
				t.Errorf("%s (rule %s) is not in the firewall's doh_v4/doh_v6 sets", a, r.Name)
			}
		}
	}
	if n == 0 {
		t.Error("sekisho-rules-doh.yaml blocks no resolver addresses")
	}
}

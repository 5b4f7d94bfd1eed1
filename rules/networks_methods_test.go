package rules

import (
	"net/netip"
	"testing"
)

// TestMappedNetworks: an IPv4-mapped network in a rule or a client group
// is its IPv4 network (addresses are matched unmapped); it used to be kept
// as IPv6 and silently never match.
func TestMappedNetworks(t *testing.T) {
	set := mustCompile(t, `version: 1
client_groups:
  - name: kyoiku
    networks: ["::ffff:10.20.0.0/112"]
rules:
  - name: block-that-server
    networks: ["::ffff:203.0.113.0/120"]
    action: block
`)
	f := Facts{Method: "POST", Host: "203.0.113.5", Port: 80, Addr: netip.MustParseAddr("203.0.113.5"), Country: "JP", Path: "/", Final: true,
		Client: netip.MustParseAddr("10.20.1.1")}
	set.Prepare(&f)
	if f.Group == nil {
		t.Errorf("client 10.20.1.1 not in group kyoiku (networks ::ffff:10.20.0.0/112)")
	}
	if d := set.Decide(&f); d.Action != Block {
		t.Errorf("POST to 203.0.113.5: %s by %s, want block by block-that-server", d.Action, d.RuleName())
	}
}

// TestMethodCase: "Post" does not escape a methods: [POST] rule.
func TestMethodCase(t *testing.T) {
	set := mustCompile(t, `version: 1
rules:
  - name: no-foreign-post
    methods: [POST, PUT]
    destinations: [foreign]
    action: block
`)
	f := Facts{Method: "Post", Host: "example.com", Port: 80, Country: "US", Path: "/", Final: true}
	set.Prepare(&f)
	if d := set.Decide(&f); d.Action != Block {
		t.Errorf("method %q: %s by %s, want block", f.Method, d.Action, d.RuleName())
	}
}

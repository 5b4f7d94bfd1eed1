package rules

import (
	"testing"
)

// want is the part of a Decision a test case pins.
type want struct {
	action     Action
	rule       string // "default" for no rule
	needBody   bool
	failClosed bool
	budget     int64 // checked only when set (0 means Unlimited for requests)
}

type decideCase struct {
	name  string
	facts Facts
	want  want
}

// runDecide prepares and decides each case against set.
func runDecide(t *testing.T, set *Set, cases []decideCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.facts
			set.Prepare(&f)
			d := set.Decide(&f)
			if d.Action != tc.want.action || d.RuleName() != tc.want.rule ||
				d.NeedBody != tc.want.needBody || d.FailClosed != tc.want.failClosed {
				t.Errorf("got %s by %q (need body %v, fail closed %v); want %s by %q (need body %v, fail closed %v)\nfacts: service %s, group %s, effective %s, destination %s",
					d.Action, d.RuleName(), d.NeedBody, d.FailClosed,
					tc.want.action, tc.want.rule, tc.want.needBody, tc.want.failClosed,
					f.ServiceName(), f.GroupName(), f.Effective, f.Destination)
			}
			wantBudget := tc.want.budget
			if wantBudget == 0 {
				wantBudget = Unlimited
			}
			if d.Budget != wantBudget {
				t.Errorf("budget %s, want %s", FormatSize(d.Budget), FormatSize(wantBudget))
			}
			if (d.Rule == nil) != (tc.want.rule == DefaultRuleName) {
				t.Errorf("Rule = %v for rule name %q", d.Rule, tc.want.rule)
			}
		})
	}
}

func TestDecideFirstMatchWins(t *testing.T) {
	set := mustCompile(t, `version: 1
default: block
rules:
  - name: first
    domains: [a.example]
    action: log
  - name: second
    domains: [a.example, b.example]
    action: allow
  - name: third
    domains: [b.example, c.example]
    action: block
`)
	runDecide(t, set, []decideCase{
		{"first of three", req(t, "GET https://a.example/", "JP"), want{action: Log, rule: "first"}},
		{"second when first does not match", req(t, "GET https://b.example/", "JP"), want{action: Allow, rule: "second"}},
		{"third", req(t, "GET https://www.c.example/", "JP"), want{action: Block, rule: "third"}},
		{"default action", req(t, "GET https://d.example/", "JP"), want{action: Block, rule: "default"}},
	})
	allowByDefault := mustCompile(t, "version: 1\n")
	runDecide(t, allowByDefault, []decideCase{
		{"no rules, default allow", req(t, "POST https://example.kr/", "KR", body(1)), want{action: Allow, rule: "default"}},
	})
}

func TestDecideDestinations(t *testing.T) {
	set := mustCompile(t, `version: 1
default: block
rules:
  - name: foreign-uploads
    destinations: [foreign]
    methods: [POST]
    action: log
  - name: unknown-only
    destinations: [unknown]
    action: allow
  - name: internal-only
    destinations: [internal]
    action: allow
  - name: domestic-or-internal
    destinations: [domestic, internal]
    action: allow
`)
	runDecide(t, set, []decideCase{
		{"foreign", req(t, "POST https://example.kr/", "KR"), want{action: Log, rule: "foreign-uploads"}},
		{"foreign matches unknown", req(t, "POST https://example.kr/", CountryUnknown), want{action: Log, rule: "foreign-uploads"}},
		{"empty country is unknown", req(t, "POST https://example.kr/", ""), want{action: Log, rule: "foreign-uploads"}},
		{"unknown only matches unknown", req(t, "GET https://example.kr/", CountryUnknown), want{action: Allow, rule: "unknown-only"}},
		{"foreign is not unknown", req(t, "GET https://example.kr/", "KR"), want{action: Block, rule: "default"}},
		{"internal is not foreign", req(t, "POST http://intranet.example/", CountryInternal), want{action: Allow, rule: "internal-only"}},
		{"domestic", req(t, "POST https://example.jp/", "JP"), want{action: Allow, rule: "domestic-or-internal"}},
	})
}

func TestDecideCountries(t *testing.T) {
	set := mustCompile(t, `version: 1
domestic: [JP]
default: block
country_groups:
  five-eyes: [US, GB, CA, AU, NZ]
  partners: [five-eyes, kr]
rules:
  - name: eu
    countries: [EU]
    action: log
  - name: eea
    countries: [EEA]
    action: allow
  - name: partners
    countries: [partners]
    action: allow
  - name: china
    countries: [cn, HK, MO]
    action: block
  - name: home
    countries: [JP]
    action: allow
`)
	runDecide(t, set, []decideCase{
		{"EU member", req(t, "POST https://example.de/", "DE"), want{action: Log, rule: "eu"}},
		{"EEA but not EU", req(t, "POST https://example.no/", "NO"), want{action: Allow, rule: "eea"}},
		{"Switzerland is in neither", req(t, "POST https://example.ch/", "CH"), want{action: Block, rule: "default"}},
		{"group inside a group", req(t, "POST https://example.com/", "US"), want{action: Allow, rule: "partners"}},
		{"lower-case code in a group", req(t, "POST https://example.kr/", "KR"), want{action: Allow, rule: "partners"}},
		{"lower-case code in a rule", req(t, "POST https://example.cn/", "CN"), want{action: Block, rule: "china"}},
		{"no group", req(t, "POST https://example.br/", "BR"), want{action: Block, rule: "default"}},
		{"domestic country by code", req(t, "POST https://example.jp/", "JP"), want{action: Allow, rule: "home"}},
		{"unknown matches no country", req(t, "POST https://example.net/", CountryUnknown), want{action: Block, rule: "default"}},
		{"internal matches no country", req(t, "POST http://intra/", CountryInternal), want{action: Block, rule: "default"}},
	})
}

// TestPrepareDeclaredCountry: the catalog's declared storage country makes
// a destination stricter, never laxer; rules see Effective.
func TestPrepareDeclaredCountry(t *testing.T) {
	set := mustCompile(t, `version: 1
domestic: [JP]
builtin_catalog: false
services:
  - name: kr-store
    domains: [kr-store.example]
    storage_country: KR
  - name: jp-store
    domains: [jp-store.example]
    storage_country: JP
  - name: us-store
    domains: [us-store.example]
    storage_country: US
  - name: chat
    domains: [chat.example]
    storage_country: JP
    endpoints:
      - name: media
        domains: [media.chat.example]
        storage_country: KR
      - name: web
        domains: [www.chat.example]
rules:
  - name: korea
    countries: [KR]
    action: block
  - name: foreign
    destinations: [foreign]
    action: log
`)
	tests := []struct {
		name                string
		host, country       string
		svc, endpoint       string
		declared, effective string
		dest                Destination
		action              Action
		rule                string
	}{
		{"CDN edge in JP, storage declared KR", "kr-store.example", "JP", "kr-store", "", "KR", "KR", Foreign, Block, "korea"},
		{"dialed KR, storage declared JP", "jp-store.example", "KR", "jp-store", "", "JP", "KR", Foreign, Block, "korea"},
		{"dialed JP, storage declared JP", "jp-store.example", "JP", "jp-store", "", "JP", "JP", Domestic, Allow, "default"},
		{"dialed internal, storage declared JP", "jp-store.example", CountryInternal, "jp-store", "", "JP", "JP", Domestic, Allow, "default"},
		{"dialed unknown, storage declared JP", "jp-store.example", CountryUnknown, "jp-store", "", "JP", CountryUnknown, Unknown, Log, "foreign"},
		{"dialed unknown, storage declared KR", "kr-store.example", CountryUnknown, "kr-store", "", "KR", "KR", Foreign, Block, "korea"},
		{"both foreign: the declared storage counts", "us-store.example", "KR", "us-store", "", "US", "US", Foreign, Log, "foreign"},
		{"endpoint declaration wins over the service's", "media.chat.example", "JP", "chat", "media", "KR", "KR", Foreign, Block, "korea"},
		{"deeper host under an endpoint", "a.b.media.chat.example", "JP", "chat", "media", "KR", "KR", Foreign, Block, "korea"},
		{"endpoint without a country inherits the service's", "www.chat.example", "KR", "chat", "web", "JP", "KR", Foreign, Block, "korea"},
		{"service level", "chat.example", "JP", "chat", "", "JP", "JP", Domestic, Allow, "default"},
		{"no service: the dialed country", "example.org", "KR", "other", "", "", "KR", Foreign, Block, "korea"},
		{"no service, no country", "example.org", "", "other", "", "", CountryUnknown, Unknown, Log, "foreign"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := req(t, "POST https://"+tt.host+"/", tt.country, body(10))
			set.Prepare(&f)
			ep := ""
			if f.Endpoint != nil {
				ep = f.Endpoint.Name
			}
			if f.ServiceName() != tt.svc || ep != tt.endpoint || f.Declared != tt.declared ||
				f.Effective != tt.effective || f.Destination != tt.dest || f.Country != tt.country {
				t.Errorf("service %s endpoint %q declared %q effective %q destination %s country %q; want %s %q %q %q %s %q",
					f.ServiceName(), ep, f.Declared, f.Effective, f.Destination, f.Country,
					tt.svc, tt.endpoint, tt.declared, tt.effective, tt.dest, tt.country)
			}
			d := set.Decide(&f)
			if d.Action != tt.action || d.RuleName() != tt.rule {
				t.Errorf("decided %s by %s, want %s by %s", d.Action, d.RuleName(), tt.action, tt.rule)
			}
		})
	}

	// Prepare overwrites what a previous Prepare derived: facts are reused
	// by the proxy when it decides again with more of the body.
	f := req(t, "POST https://kr-store.example/", "JP")
	set.Prepare(&f)
	f.Host = "example.org"
	set.Prepare(&f)
	if f.Service != nil || f.Declared != "" || f.Effective != "JP" || f.Destination != Domestic {
		t.Errorf("stale facts after a second Prepare: %+v", f)
	}
}

func TestDecideServicesAndClients(t *testing.T) {
	set := mustCompile(t, `version: 1
client_groups:
  - name: staff
    networks: [10.0.0.0/8, "2001:db8:1::/48"]
  - name: guests
    networks: [192.168.0.0/16]
  - name: lab
    networks: [10.99.0.0/16]
rules:
  - name: guests-no-service
    services: [other]
    clients: [guests]
    action: block
  - name: no-group
    clients: [other]
    action: log
  - name: staff-slack
    services: [slack, dropbox]
    clients: [staff, lab]
    action: allow
  - name: any-slack
    services: [slack]
    action: block
`)
	runDecide(t, set, []decideCase{
		{"guest to a site of no service", req(t, "GET https://example.org/", "US", client("192.168.1.5")), want{action: Block, rule: "guests-no-service"}},
		{"guest to a catalog service", req(t, "GET https://app.slack.com/", "US", client("192.168.1.5")), want{action: Block, rule: "any-slack"}},
		{"client in no group", req(t, "GET https://app.slack.com/", "US", client("172.16.0.1")), want{action: Log, rule: "no-group"}},
		{"client address unknown", req(t, "GET https://app.slack.com/", "US", func(f *Facts) { f.Client = netipZero }), want{action: Log, rule: "no-group"}},
		{"staff to slack", req(t, "GET https://app.slack.com/", "US", client("10.1.2.3")), want{action: Allow, rule: "staff-slack"}},
		{"first matching group wins", req(t, "GET https://dropbox.com/", "US", client("10.99.0.1")), want{action: Allow, rule: "staff-slack"}},
		{"IPv4-mapped client", req(t, "GET https://app.slack.com/", "US", client("::ffff:10.1.2.3")), want{action: Allow, rule: "staff-slack"}},
		{"IPv6 client", req(t, "GET https://app.slack.com/", "US", client("2001:db8:1::42")), want{action: Allow, rule: "staff-slack"}},
		{"IPv6 client in no group", req(t, "GET https://app.slack.com/", "US", client("2001:db8:2::42")), want{action: Log, rule: "no-group"}},
	})
	if g := set.ClientGroup(mustAddr("10.99.0.1")); g == nil || g.Name != "staff" {
		t.Errorf("ClientGroup picks the first group in file order, got %v", g)
	}
}

func TestDecideMethodsPortsNetworksDomains(t *testing.T) {
	set := mustCompile(t, `version: 1
rules:
  - name: methods
    domains: [m.example]
    methods: [post, PUT]
    action: block
  - name: ports
    domains: [p.example]
    ports: [443, "8000-8999", " 9443 - 9444 "]
    action: block
  - name: networks
    networks: [203.0.113.0/24, "2001:db8::/32", 198.51.100.7]
    action: block
  - name: domains
    domains: [example.com, "*.example.org", Example.NET.]
    action: log
`)
	runDecide(t, set, []decideCase{
		{"method listed in lower case", req(t, "POST https://m.example/", "JP"), want{action: Block, rule: "methods"}},
		{"method listed", req(t, "PUT https://m.example/", "JP"), want{action: Block, rule: "methods"}},
		{"method not listed", req(t, "GET https://m.example/", "JP"), want{action: Allow, rule: "default"}},
		{"port listed", req(t, "GET https://p.example/", "JP"), want{action: Block, rule: "ports"}},
		{"port below range", req(t, "GET https://p.example:7999/", "JP"), want{action: Allow, rule: "default"}},
		{"range start", req(t, "GET https://p.example:8000/", "JP"), want{action: Block, rule: "ports"}},
		{"range end", req(t, "GET https://p.example:8999/", "JP"), want{action: Block, rule: "ports"}},
		{"above range", req(t, "GET https://p.example:9000/", "JP"), want{action: Allow, rule: "default"}},
		{"range with spaces", req(t, "GET https://p.example:9444/", "JP"), want{action: Block, rule: "ports"}},
		{"port 80 not listed", req(t, "GET http://p.example/", "JP"), want{action: Allow, rule: "default"}},
		{"address in network", req(t, "GET https://x.example/", "JP", addr("203.0.113.77")), want{action: Block, rule: "networks"}},
		{"single address", req(t, "GET https://x.example/", "JP", addr("198.51.100.7")), want{action: Block, rule: "networks"}},
		{"next address", req(t, "GET https://x.example/", "JP", addr("198.51.100.8")), want{action: Allow, rule: "default"}},
		{"IPv4-mapped address", req(t, "GET https://x.example/", "JP", addr("::ffff:203.0.113.1")), want{action: Block, rule: "networks"}},
		{"IPv6 address", req(t, "GET https://x.example/", "JP", addr("2001:db8::1")), want{action: Block, rule: "networks"}},
		{"no address (resolution failed)", req(t, "GET https://x.example/", CountryUnknown), want{action: Allow, rule: "default"}},
		{"domain itself", req(t, "GET https://example.com/", "JP"), want{action: Log, rule: "domains"}},
		{"subdomain", req(t, "GET https://a.b.example.com/", "JP"), want{action: Log, rule: "domains"}},
		{"not a label boundary", req(t, "GET https://badexample.com/", "JP"), want{action: Allow, rule: "default"}},
		{"wildcard: subdomain", req(t, "GET https://www.example.org/", "JP"), want{action: Log, rule: "domains"}},
		{"wildcard: not the domain itself", req(t, "GET https://example.org/", "JP"), want{action: Allow, rule: "default"}},
		{"domain normalised in the file", req(t, "GET https://www.example.net/", "JP"), want{action: Log, rule: "domains"}},
	})
}

func TestDecidePaths(t *testing.T) {
	set := mustCompile(t, `version: 1
rules:
  - name: paths
    paths: [/upload, "/api/*/files", "/media/**", "/v?/x"]
    action: block
`)
	runDecide(t, set, []decideCase{
		{"prefix itself", req(t, "POST https://e.example/upload", "JP"), want{action: Block, rule: "paths"}},
		{"under the prefix", req(t, "POST https://e.example/upload/a/b", "JP"), want{action: Block, rule: "paths"}},
		{"prefix is a string prefix", req(t, "POST https://e.example/uploads", "JP"), want{action: Block, rule: "paths"}},
		{"other path", req(t, "POST https://e.example/download", "JP"), want{action: Allow, rule: "default"}},
		{"query is not part of the path", req(t, "POST https://e.example/x?p=/upload", "JP"), want{action: Allow, rule: "default"}},
		{"star within a segment", req(t, "POST https://e.example/api/v1/files", "JP"), want{action: Block, rule: "paths"}},
		{"empty segment for star", req(t, "POST https://e.example/api//files", "JP"), want{action: Block, rule: "paths"}},
		{"star does not cross segments", req(t, "POST https://e.example/api/v1/v2/files", "JP"), want{action: Allow, rule: "default"}},
		{"glob is anchored", req(t, "POST https://e.example/api/v1/files/1", "JP"), want{action: Allow, rule: "default"}},
		{"double star crosses segments", req(t, "POST https://e.example/media/2026/03/a.png", "JP"), want{action: Block, rule: "paths"}},
		{"double star after the slash", req(t, "POST https://e.example/media/", "JP"), want{action: Block, rule: "paths"}},
		{"double star needs the slash", req(t, "POST https://e.example/media", "JP"), want{action: Allow, rule: "default"}},
		{"question mark is one character", req(t, "POST https://e.example/v2/x", "JP"), want{action: Block, rule: "paths"}},
		{"question mark is not two", req(t, "POST https://e.example/v10/x", "JP"), want{action: Allow, rule: "default"}},
		{"regexp characters are literal", req(t, "POST https://e.example/api/v1/filesXfiles", "JP"), want{action: Allow, rule: "default"}},
		{"tunnels have no path", req(t, "CONNECT e.example:443", "JP"), want{action: Allow, rule: "default"}},
	})
	dot := mustCompile(t, "version: 1\nrules:\n  - name: r\n    paths: [\"/a.b/*\"]\n    action: block\n")
	runDecide(t, dot, []decideCase{
		{"dot is literal", req(t, "POST https://e.example/aXb/c", "JP"), want{action: Allow, rule: "default"}},
		{"dot matches a dot", req(t, "POST https://e.example/a.b/c", "JP"), want{action: Block, rule: "r"}},
	})
}

func TestDecideUpload(t *testing.T) {
	set := mustCompile(t, `version: 1
rules:
  - name: up
    upload: true
    action: block
  - name: down
    upload: false
    action: log
`)
	runDecide(t, set, []decideCase{
		{"body", req(t, "POST https://e.example/", "KR", body(1)), want{action: Block, rule: "up"}},
		{"chunked body not seen yet", req(t, "POST https://e.example/", "KR", chunked(0)), want{action: Block, rule: "up"}},
		{"no body", req(t, "GET https://e.example/", "KR"), want{action: Log, rule: "down"}},
		{"empty body", req(t, "POST https://e.example/", "KR", body(0)), want{action: Log, rule: "down"}},
		{"stream: body rules do not apply", req(t, "CONNECT e.example:443", "KR"), want{action: Allow, rule: "default", budget: 1 << 20}},
	})
}

func TestDecideMinBody(t *testing.T) {
	set := mustCompile(t, `version: 1
default: log
rules:
  - name: big-block
    domains: [block.example]
    min_body_bytes: 1MiB
    action: block
  - name: big-allow
    domains: [allow.example]
    min_body_bytes: 1MiB
    action: allow
  - name: block-later
    domains: [allow.example]
    action: block
`)
	runDecide(t, set, []decideCase{
		{"exact size above", req(t, "POST https://block.example/", "KR", body(2<<20)), want{action: Block, rule: "big-block"}},
		{"exact size at the threshold", req(t, "POST https://block.example/", "KR", body(1<<20)), want{action: Block, rule: "big-block"}},
		{"exact size below", req(t, "POST https://block.example/", "KR", body(1<<20-1)), want{action: Log, rule: "default"}},
		{"no body", req(t, "GET https://block.example/", "KR"), want{action: Log, rule: "default"}},
		{"unknown size seen above", req(t, "POST https://block.example/", "KR", chunked(1<<20)), want{action: Block, rule: "big-block"}},
		{"unknown size below: need the body", req(t, "POST https://block.example/", "KR", chunked(100)), want{action: Block, rule: "big-block", needBody: true}},
		{"unknown size below, final: block rule fails closed", req(t, "POST https://block.example/", "KR", chunked(100), final()), want{action: Block, rule: "big-block", failClosed: true}},
		{"exact size, final: no fail closed", req(t, "POST https://block.example/", "KR", body(100), final()), want{action: Log, rule: "default"}},
		// NeedBody stops the evaluation: block-later must not let the body
		// through before big-allow knows its size.
		{"allow rule needs the body too", req(t, "POST https://allow.example/", "KR", chunked(100)), want{action: Allow, rule: "big-allow", needBody: true}},
		{"unknown size below, final: allow rule skipped", req(t, "POST https://allow.example/", "KR", chunked(100), final()), want{action: Block, rule: "block-later"}},
		{"allow rule with the size known", req(t, "POST https://allow.example/", "KR", body(5<<20)), want{action: Allow, rule: "big-allow"}},
	})
	if !set.MayNeedBody() {
		t.Error("MayNeedBody() = false")
	}
}

func TestDecideFileParts(t *testing.T) {
	set := mustCompile(t, `version: 1
rules:
  - name: files
    domains: [f.example]
    file_parts: true
    action: block
  - name: no-files
    domains: [f.example]
    file_parts: false
    action: log
  - name: allow-no-files
    domains: [g.example]
    file_parts: false
    action: allow
  - name: g-rest
    domains: [g.example]
    action: log
`)
	mp := ctype("multipart/form-data")
	runDecide(t, set, []decideCase{
		{"file parts", req(t, "POST https://f.example/", "KR", body(10), mp, fileParts(TriYes)), want{action: Block, rule: "files"}},
		{"no file parts", req(t, "POST https://f.example/", "KR", body(10), mp, fileParts(TriNo)), want{action: Log, rule: "no-files"}},
		{"not known yet", req(t, "POST https://f.example/", "KR", body(10), mp), want{action: Block, rule: "files", needBody: true}},
		{"not known at the end: block fails closed", req(t, "POST https://f.example/", "KR", body(10), mp, final()), want{action: Block, rule: "files", failClosed: true}},
		{"allow rule, not known at the end: skipped", req(t, "POST https://g.example/", "KR", body(10), mp, final()), want{action: Log, rule: "g-rest"}},
		{"allow rule, not known yet", req(t, "POST https://g.example/", "KR", body(10), mp), want{action: Allow, rule: "allow-no-files", needBody: true}},
		{"allow rule, known", req(t, "POST https://g.example/", "KR", body(10), mp, fileParts(TriNo)), want{action: Allow, rule: "allow-no-files"}},
	})
}

func TestDecideContentTypes(t *testing.T) {
	set := mustCompile(t, `version: 1
rules:
  - name: images
    domains: [c.example]
    content_types: ["image/*", Video/MP4]
    action: block
  - name: pdf
    domains: [c.example]
    content_types: [application/pdf]
    action: log
  - name: anything
    domains: [any.example]
    content_types: ["*/*"]
    action: block
`)
	mp := ctype("multipart/form-data")
	runDecide(t, set, []decideCase{
		{"request type, wildcard subtype", req(t, "PUT https://c.example/", "KR", body(10), ctype("image/png")), want{action: Block, rule: "images"}},
		{"exact type listed in capitals", req(t, "PUT https://c.example/", "KR", body(10), ctype("video/mp4")), want{action: Block, rule: "images"}},
		{"other subtype of video", req(t, "PUT https://c.example/", "KR", body(10), ctype("video/webm")), want{action: Allow, rule: "default"}},
		{"exact type", req(t, "PUT https://c.example/", "KR", body(10), ctype("application/pdf")), want{action: Log, rule: "pdf"}},
		{"no match", req(t, "PUT https://c.example/", "KR", body(10), ctype("application/json")), want{action: Allow, rule: "default"}},
		{"type prefix is not a type", req(t, "PUT https://c.example/", "KR", body(10), ctype("imagex/png")), want{action: Allow, rule: "default"}},
		{"part type", req(t, "POST https://c.example/", "KR", body(10), mp, parts(true, "text/plain", "image/jpeg")), want{action: Block, rule: "images"}},
		{"part type, parts incomplete: already a match", req(t, "POST https://c.example/", "KR", body(10), mp, parts(false, "image/jpeg")), want{action: Block, rule: "images"}},
		{"parts complete, none listed", req(t, "POST https://c.example/", "KR", body(10), mp, parts(true, "text/plain")), want{action: Allow, rule: "default"}},
		{"parts complete, no file parts", req(t, "POST https://c.example/", "KR", body(10), mp, parts(true)), want{action: Allow, rule: "default"}},
		{"multipart, parts incomplete: need the body", req(t, "POST https://c.example/", "KR", body(10), mp, parts(false, "text/plain")), want{action: Block, rule: "images", needBody: true}},
		{"multipart, parts incomplete, final: fail closed", req(t, "POST https://c.example/", "KR", body(10), mp, parts(false, "text/plain"), final()), want{action: Block, rule: "images", failClosed: true}},
		{"encoded multipart cannot be seen into", req(t, "POST https://c.example/", "KR", body(10), mp, parts(true), encoded()), want{action: Block, rule: "images", needBody: true}},
		{"encoded multipart, final", req(t, "POST https://c.example/", "KR", body(10), mp, parts(true), encoded(), final()), want{action: Block, rule: "images", failClosed: true}},
		{"encoded non-multipart is judged by its type", req(t, "POST https://c.example/", "KR", body(10), ctype("application/json"), encoded()), want{action: Allow, rule: "default"}},
		{"any type", req(t, "POST https://any.example/", "KR", body(10), ctype("application/x-whatever")), want{action: Block, rule: "anything"}},
		{"any type matches multipart itself", req(t, "POST https://any.example/", "KR", body(10), mp), want{action: Block, rule: "anything"}},
		{"stream skips content rules", req(t, "CONNECT c.example:443", "KR"), want{action: Allow, rule: "default", budget: 1 << 20}},
	})
}

func TestDecideStreams(t *testing.T) {
	set := mustCompile(t, `version: 1
rules:
  - name: github
    services: [github]
    upload_budget: 10MiB
    action: allow
  - name: unlimited-partner
    domains: [partner.example]
    upload_budget: unlimited
    action: log
  - name: block-uploads
    destinations: [foreign]
    upload: true
    action: block
  - name: chat-socket
    domains: [chat.example]
    paths: [/socket]
    action: log
`)
	runDecide(t, set, []decideCase{
		{"rule budget", req(t, "CONNECT github.com:443", "US"), want{action: Allow, rule: "github", budget: 10 << 20}},
		{"rule budget at home too", req(t, "CONNECT github.com:443", "JP"), want{action: Allow, rule: "github", budget: 10 << 20}},
		{"rule budget unlimited", req(t, "CONNECT partner.example:443", "US"), want{action: Log, rule: "unlimited-partner", budget: Unlimited}},
		{"default foreign budget", req(t, "CONNECT example.com:443", "US"), want{action: Allow, rule: "default", budget: 1 << 20}},
		{"unknown gets the foreign budget", req(t, "CONNECT example.com:443", CountryUnknown), want{action: Allow, rule: "default", budget: 1 << 20}},
		{"domestic is unlimited", req(t, "CONNECT example.jp:443", "JP"), want{action: Allow, rule: "default", budget: Unlimited}},
		{"internal is unlimited", req(t, "CONNECT intranet.example:443", CountryInternal), want{action: Allow, rule: "default", budget: Unlimited}},
		{"websocket with a path", req(t, "GET wss://chat.example/socket", "US"), want{action: Log, rule: "chat-socket", budget: 1 << 20}},
		{"a request is not a stream: no budget", req(t, "GET https://example.com/", "US"), want{action: Allow, rule: "default"}},
		{"a rule budget does not apply to a request", req(t, "GET https://github.com/", "US"), want{action: Allow, rule: "github"}},
	})
	custom := mustCompile(t, `version: 1
tunnel_upload_budget:
  foreign: 64KiB
  domestic: 10MiB
rules:
  - name: block-kr-tunnels
    countries: [KR]
    methods: [CONNECT]
    action: block
`)
	runDecide(t, custom, []decideCase{
		{"custom foreign budget", req(t, "CONNECT example.com:443", "US"), want{action: Allow, rule: "default", budget: 64 << 10}},
		{"custom domestic budget", req(t, "CONNECT example.jp:443", "JP"), want{action: Allow, rule: "default", budget: 10 << 20}},
		{"a blocked tunnel still reports its budget", req(t, "CONNECT example.kr:443", "KR"), want{action: Block, rule: "block-kr-tunnels", budget: 64 << 10}},
	})
}

func TestDecideReportOnly(t *testing.T) {
	rules := `
rules:
  - name: block-foreign
    destinations: [foreign]
    action: block
  - name: log-domestic
    destinations: [domestic]
    action: log
`
	enforcing := mustCompile(t, "version: 1\nreport_only: false\n"+rules)
	reporting := mustCompile(t, "version: 1\nreport_only: true\n"+rules)
	tests := []struct {
		name               string
		set                *Set
		country            string
		action             Action
		blocks, wouldBlock bool
	}{
		{"enforced block", enforcing, "KR", Block, true, false},
		{"reported block", reporting, "KR", Block, false, true},
		{"log is never a block", reporting, "JP", Log, false, false},
		{"allow is never a block", enforcing, CountryInternal, Allow, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := req(t, "POST https://example.com/", tt.country, body(1))
			tt.set.Prepare(&f)
			d := tt.set.Decide(&f)
			if d.Action != tt.action || d.Blocks() != tt.blocks || d.WouldBlock() != tt.wouldBlock || d.ReportOnly != tt.set.ReportOnly() {
				t.Errorf("got %+v: Blocks %v WouldBlock %v", d, d.Blocks(), d.WouldBlock())
			}
		})
	}
	// NeedBody decisions carry the mode too.
	nb := mustCompile(t, "version: 1\nreport_only: true\nrules:\n  - name: r\n    file_parts: true\n    action: block\n")
	f := req(t, "POST https://example.com/", "KR", body(1), ctype("multipart/form-data"))
	nb.Prepare(&f)
	if d := nb.Decide(&f); !d.NeedBody || !d.ReportOnly || d.Blocks() {
		t.Errorf("got %+v", d)
	}
}

func TestFactsNames(t *testing.T) {
	var f Facts
	if f.ServiceName() != "other" || f.GroupName() != "other" {
		t.Errorf("zero facts: %q %q", f.ServiceName(), f.GroupName())
	}
	var d Decision
	if d.RuleName() != "default" {
		t.Errorf("zero decision: %q", d.RuleName())
	}
	svc := &Service{Name: "x"}
	if svc.DisplayName() != "x" {
		t.Errorf("DisplayName without title = %q", svc.DisplayName())
	}
	svc.Title = "X Corp"
	if svc.DisplayName() != "X Corp" {
		t.Errorf("DisplayName = %q", svc.DisplayName())
	}
	if TriOf(true) != TriYes || TriOf(false) != TriNo {
		t.Error("TriOf")
	}
}

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{
		"":                         "/",
		"/":                        "/",
		"/upload":                  "/upload",
		"/x/../upload":             "/upload",
		"//upload//a/":             "/upload/a/",
		"/a/./b":                   "/a/b",
		"upload":                   "/upload",
		"/../../etc":               "/etc",
		"/files/":                  "/files/",
		"/a b/c":                   "/a b/c",
		"/api/v1/../v2":            "/api/v2",
		`/api\upload`:              "/api/upload",
		"/api;jsessionid=x/upload": "/api/upload",
		"/a;b=c;d/e;f":             "/a/e",
		`\\host\share`:             "/host/share",
	} {
		if got := CleanPath(in); got != want {
			t.Errorf("CleanPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestContentTypeOfUntypedBody(t *testing.T) {
	set := mustCompile(t, `version: 1
rules:
  - name: any-upload
    content_types: ["*/*"]
    action: block
  - name: octets
    content_types: [application/octet-stream]
    action: log
`)
	f := req(t, "POST http://example.com/", "JP", body(10))
	f.Body.ContentType = ""
	set.Prepare(&f)
	if d := set.Decide(&f); d.RuleName() != "any-upload" {
		t.Errorf("a body without Content-Type must match */*: got %s", d.RuleName())
	}
	g := req(t, "GET http://example.com/", "JP")
	set.Prepare(&g)
	if d := set.Decide(&g); d.Rule != nil {
		t.Errorf("no body, no content type: got %s", d.RuleName())
	}
}

func TestPathsMatchCaseInsensitively(t *testing.T) {
	set := mustCompile(t, `version: 1
rules:
  - name: prefix
    paths: [/api/upload]
    action: block
  - name: glob
    paths: ["/files/*/put"]
    action: log
`)
	for p, want := range map[string]string{
		"/API/UPLOAD/x": "prefix",
		"/Api/Upload":   "prefix",
		"/FILES/a/PUT":  "glob",
		"/api/download": "default",
	} {
		f := req(t, "GET http://example.com"+p, "JP")
		set.Prepare(&f)
		if got := set.Decide(&f).RuleName(); got != want {
			t.Errorf("%s: rule %s, want %s", p, got, want)
		}
	}
}

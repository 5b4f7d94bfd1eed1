package rules

import (
	"slices"
	"strings"
	"testing"
)

// builtinSet compiles a file with only a version: the built-in catalog.
func builtinSet(t testing.TB) *Set {
	t.Helper()
	return mustCompile(t, "version: 1\n")
}

func TestBuiltinCatalogCompiles(t *testing.T) {
	w, errs := parseFile(BuiltinCatalogName, builtinCatalog, true)
	if errs != nil {
		t.Fatalf("built-in catalog does not parse:\n%v", errs)
	}
	set := builtinSet(t)
	if w := set.Warnings(); len(w) != 0 {
		t.Errorf("warnings from the built-in catalog alone: %q", w)
	}
	cat := set.Catalog()
	svcs := cat.Services()
	if len(svcs) < 25 {
		t.Fatalf("%d services in the built-in catalog, want at least 25", len(svcs))
	}
	if len(svcs) != len(w.services) {
		t.Errorf("%d services compiled from %d in the file", len(svcs), len(w.services))
	}
	domains := 0
	for i, s := range svcs {
		if !s.Builtin {
			t.Errorf("%s: Builtin = false", s.Name)
		}
		if s.index != i+1 {
			t.Errorf("%s: index %d at position %d", s.Name, s.index, i)
		}
		if s.Title == "" || s.Category == "" {
			t.Errorf("%s: no title or category", s.Name)
		}
		if !slices.IsSorted(s.Domains) {
			t.Errorf("%s: domains not sorted: %q", s.Name, s.Domains)
		}
		if cat.Service(s.Name) != s {
			t.Errorf("Service(%q) does not find it", s.Name)
		}
		for _, d := range s.Domains {
			domains++
			if got, ep := cat.Lookup(d); got != s || ep != nil {
				t.Errorf("Lookup(%q) = %v, %v; want %s", d, got, ep, s.Name)
			}
			if n, err := NormalizeHost(d); err != nil || n != d {
				t.Errorf("%s: domain %q is not canonical", s.Name, d)
			}
		}
		for _, ep := range s.Endpoints {
			if ep.Service != s || ep.Name == "" || len(ep.Domains) == 0 {
				t.Errorf("%s: endpoint %+v", s.Name, ep)
			}
			for _, d := range ep.Domains {
				domains++
				if got, gotEP := cat.Lookup("x." + d); got != s || gotEP != ep {
					t.Errorf("Lookup(x.%s) = %v, %v; want %s/%s", d, got, gotEP, s.Name, ep.Name)
				}
			}
		}
	}
	if domains != len(cat.byDomain) {
		t.Errorf("%d domains listed, %d indexed", domains, len(cat.byDomain))
	}
	// The shared infrastructure suffixes the header promises not to list.
	for _, d := range []string{"amazonaws.com", "cloudfront.net", "akamaized.net", "googleusercontent.com", "google.com", "microsoft.com", "live.com", "qq.com", "baidu.com", "googleapis.com", "windows.net", "apple.com"} {
		if _, ok := cat.byDomain[d]; ok {
			t.Errorf("%s is listed as a whole", d)
		}
	}
}

func TestCatalogLookup(t *testing.T) {
	cat := builtinSet(t).Catalog()
	tests := []struct {
		host, svc, endpoint, storage string
	}{
		{"obs.line-scdn.net", "line", "media", ""},
		{"a.obs.line-scdn.net", "line", "media", ""},
		{"profile.line-scdn.net", "line", "", ""},
		{"line.me", "line", "", ""},
		{"access.line.me", "line", "", ""},
		{"files.slack.com", "slack", "", ""},
		{"content.dropboxapi.com", "dropbox", "", ""},
		{"api.openai.com", "openai", "api", ""},
		{"chat.deepseek.com", "deepseek", "chat", "CN"},
		{"deepseek.com", "deepseek", "", ""},
		{"bucket.s3.ap-northeast-1.amazonaws.com", "aws-s3", "ap-northeast-1", "JP"},
		{"bucket.s3.ap-northeast-2.amazonaws.com", "aws-s3", "ap-northeast-2", "KR"},
		{"s3.ap-northeast-2.wasabisys.com", "wasabi", "ap-northeast-2", "JP"},
		{"bucket.s3.amazonaws.com", "aws-s3", "", ""},
		{"ec2-1-2-3-4.compute.amazonaws.com", "", "", ""},
		{"www.icloud.com.cn", "icloud", "china-mainland", "CN"},
		{"papago.naver.com", "naver", "papago", "KR"},
		{"mail.naver.com", "naver", "naver-services", "KR"},
		{"notline.me", "", "", ""},
		{"line.me.evil.example", "", "", ""},
		{"com", "", "", ""},
		{"192.0.2.1", "", "", ""},
		{"2001:db8::1", "", "", ""},
		{"", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			svc, ep := cat.Lookup(tt.host)
			name, epName, storage := "", "", ""
			if svc != nil {
				name, storage = svc.Name, svc.StorageCountry
			}
			if ep != nil {
				epName = ep.Name
				if ep.StorageCountry != "" {
					storage = ep.StorageCountry
				}
			}
			if name != tt.svc || epName != tt.endpoint || storage != tt.storage {
				t.Errorf("Lookup(%q) = %q/%q (%q); want %q/%q (%q)", tt.host, name, epName, storage, tt.svc, tt.endpoint, tt.storage)
			}
		})
	}
	var nilCat *Catalog
	if s, e := nilCat.Lookup("line.me"); s != nil || e != nil {
		t.Error("nil catalog found a service")
	}
}

// TestCatalogLookupNoAlloc: the lookup runs on every request.
func TestCatalogLookupNoAlloc(t *testing.T) {
	cat := builtinSet(t).Catalog()
	allocs := testing.AllocsPerRun(100, func() {
		cat.Lookup("a.b.obs.line-scdn.net")
		cat.Lookup("www.example.org")
		cat.Lookup("192.0.2.1")
	})
	if allocs != 0 {
		t.Errorf("%v allocations", allocs)
	}
}

func TestCatalogOverride(t *testing.T) {
	set := mustCompile(t, `version: 1
services:
  - name: slack
    title: Slack (our Japan-resident workspace)
    category: chat
    storage_country: JP
    domains: [slack.com, slack-files.com]
rules:
  - name: slack
    services: [slack]
    action: log
`)
	cat := set.Catalog()
	slack := cat.Service("slack")
	if slack.Builtin || slack.StorageCountry != "JP" || slack.Title != "Slack (our Japan-resident workspace)" {
		t.Errorf("override = %+v", slack)
	}
	// The file extends the built-in: its domains are added to the
	// built-in's, which stay.
	builtinSlack := builtinSet(t).Catalog().Service("slack")
	if !slices.Equal(slack.Domains, builtinSlack.Domains) {
		t.Errorf("domains %q, want the built-in's %q", slack.Domains, builtinSlack.Domains)
	}
	if svc, _ := cat.Lookup("slack-edge.com"); svc != slack {
		t.Errorf("slack-edge.com belongs to %v, want the extended slack", svc)
	}
	// The override keeps its built-in position, so the rule's bitset uses
	// the same index.
	var pos int
	for i, s := range cat.Services() {
		if s == slack {
			pos = i
		}
	}
	if pos == 0 || pos != slack.index-1 || len(cat.Services()) != len(builtinSet(t).Catalog().Services()) {
		t.Errorf("override at position %d with index %d", pos, slack.index)
	}
	f := req(t, "POST https://files.slack.com/upload", "US", body(10))
	set.Prepare(&f)
	if d := set.Decide(&f); d.RuleName() != "slack" || f.Declared != "JP" || f.Effective != "US" {
		t.Errorf("decided %s, declared %q effective %q", d.RuleName(), f.Declared, f.Effective)
	}
	if len(set.Warnings()) != 0 {
		t.Errorf("warnings: %q", set.Warnings())
	}
}

func TestCatalogClaimBuiltinDomain(t *testing.T) {
	set := mustCompile(t, `version: 1
services:
  - name: line-media
    title: LINE media (declared KR)
    storage_country: KR
    domains:
      - obs.line-scdn.net
      - obs.line-apps.com
  - name: my-box
    domains: [upload.box.com]
`)
	want := []string{
		`test.yaml:7:9: domain "obs.line-scdn.net" moves from built-in service "line" to "line-media"`,
		`test.yaml:8:9: domain "obs.line-apps.com" moves from built-in service "line" to "line-media"`,
	}
	if !slices.Equal(set.Warnings(), want) {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(set.Warnings(), "\n"), strings.Join(want, "\n"))
	}
	cat := set.Catalog()
	if svc, ep := cat.Lookup("obs.line-scdn.net"); svc == nil || svc.Name != "line-media" || ep != nil {
		t.Errorf("Lookup(obs.line-scdn.net) = %v, %v", svc, ep)
	}
	line := cat.Service("line")
	for _, ep := range line.Endpoints {
		if ep.Name == "media" && len(ep.Domains) != 0 {
			t.Errorf("line/media still lists %q", ep.Domains)
		}
	}
	// A more specific domain under a built-in one is not a claim: it is a
	// longer suffix and wins the lookup.
	if svc, _ := cat.Lookup("upload.box.com"); svc == nil || svc.Name != "my-box" {
		t.Errorf("upload.box.com = %v", svc)
	}
	if svc, _ := cat.Lookup("app.box.com"); svc == nil || svc.Name != "box" {
		t.Errorf("app.box.com = %v", svc)
	}
}

// TestCatalogOverrideClaimsLaterBuiltin: a file's override of a built-in
// service early in the catalog (line) takes a domain of a built-in service
// that comes later (line-works). The file wins with a warning, as when a
// new service claims it; the built-in catalog is not blamed.
func TestCatalogOverrideClaimsLaterBuiltin(t *testing.T) {
	set := mustCompile(t, `version: 1
services:
  - name: line
    domains: [line.me, worksmobile.com]
`)
	want := []string{`test.yaml:4:24: domain "worksmobile.com" moves from built-in service "line-works" to "line"`}
	if !slices.Equal(set.Warnings(), want) {
		t.Errorf("warnings %q, want %q", set.Warnings(), want)
	}
	cat := set.Catalog()
	if svc, _ := cat.Lookup("auth.worksmobile.com"); svc == nil || svc.Name != "line" {
		t.Errorf("worksmobile.com belongs to %v", svc)
	}
	if lw := cat.Service("line-works"); slices.Contains(lw.Domains, "worksmobile.com") {
		t.Errorf("line-works still lists it: %q", lw.Domains)
	}
}

func TestCatalogWithoutBuiltin(t *testing.T) {
	set := mustCompile(t, `version: 1
builtin_catalog: false
services:
  - name: city-chat
    domains: [chat.city.example.jp]
`)
	cat := set.Catalog()
	if n := len(cat.Services()); n != 1 {
		t.Errorf("%d services, want only the file's", n)
	}
	if svc, _ := cat.Lookup("line.me"); svc != nil {
		t.Errorf("line.me = %s without the built-in catalog", svc.Name)
	}
	if msg := compileErr(t, "version: 1\nbuiltin_catalog: false\nrules:\n  - name: r\n    services: [line]\n    action: block\n"); msg !=
		`test.yaml:5:16: rule "r": unknown service "line" (define it under services:, or use "other" for no service)` {
		t.Errorf("got %s", msg)
	}
	empty := mustCompile(t, "version: 1\nbuiltin_catalog: false\n")
	if svc, ep := empty.Catalog().Lookup("example.com"); svc != nil || ep != nil {
		t.Error("empty catalog found a service")
	}
	// The setting belongs to one file of a directory, and any file may
	// hold it.
	set, err := Compile([]Source{
		{Name: "a.yaml", Data: []byte("version: 1\n")},
		{Name: "b.yaml", Data: []byte("version: 1\nbuiltin_catalog: false\n")},
	})
	if err != nil || len(set.Catalog().Services()) != 0 {
		t.Errorf("builtin_catalog in the second file: %v", err)
	}
	_, err = Compile([]Source{
		{Name: "a.yaml", Data: []byte("version: 1\nbuiltin_catalog: true\n")},
		{Name: "b.yaml", Data: []byte("version: 1\nbuiltin_catalog: false\n")},
	})
	if err == nil || err.Error() != `b.yaml:2:1: "builtin_catalog" is already set in a.yaml:2; set it in one file only` {
		t.Errorf("got %v", err)
	}
}

func TestCatalogDuplicateDomainAcrossFiles(t *testing.T) {
	_, err := Compile([]Source{
		{Name: "a.yaml", Data: []byte("version: 1\nservices:\n  - name: a\n    domains: [x.example]\n")},
		{Name: "b.yaml", Data: []byte("version: 1\nservices:\n  - name: b\n    domains: [x.example]\n")},
	})
	if err == nil || err.Error() != `b.yaml:4:15: domain "x.example" is already listed for service "a" (a.yaml:4)` {
		t.Errorf("got %v", err)
	}
	_, err = Compile([]Source{
		{Name: "a.yaml", Data: []byte("version: 1\nservices:\n  - name: a\n    domains: [x.example]\n")},
		{Name: "b.yaml", Data: []byte("version: 1\nservices:\n  - name: a\n    domains: [y.example]\n")},
	})
	if err == nil || err.Error() != `b.yaml:3:11: service "a" is already defined at a.yaml:3` {
		t.Errorf("got %v", err)
	}
}

func TestCatalogExtendBuiltinWithEndpoint(t *testing.T) {
	set := mustCompile(t, `version: 1
services:
  - name: line
    endpoints:
      - name: media
        domains: [obs.line-scdn.net, obs.line-apps.com]
        storage_country: KR
`)
	cat := set.Catalog()
	line := cat.Service("line")
	if svc, ep := cat.Lookup("upload.obs.line-scdn.net"); svc != line || ep == nil || ep.Name != "media" || ep.StorageCountry != "KR" {
		t.Fatalf("Lookup(upload.obs.line-scdn.net) = %v, %v", svc, ep)
	}
	if svc, ep := cat.Lookup("line.me"); svc != line || ep != nil {
		t.Errorf("the built-in domains of line must stay: %v %v", svc, ep)
	}
	if len(line.Endpoints) != 1 || !slices.Equal(line.Endpoints[0].Domains, []string{"obs.line-apps.com", "obs.line-scdn.net"}) {
		t.Errorf("endpoints: %+v", line.Endpoints)
	}
	if line.Builtin {
		t.Error("an extended service is not Builtin")
	}
	if len(set.Warnings()) != 0 {
		t.Errorf("extending a service is not worth a warning: %q", set.Warnings())
	}
	f := req(t, "POST https://obs.line-scdn.net/r/talk", "JP", body(10))
	set.Prepare(&f)
	if f.Declared != "KR" || f.Effective != "KR" || f.Destination != Foreign {
		t.Errorf("declared %q effective %q destination %v", f.Declared, f.Effective, f.Destination)
	}
}

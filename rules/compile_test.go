package rules

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestValidFixtures compiles every file and directory under testdata/valid;
// each carries test cases, which Compile runs.
func TestValidFixtures(t *testing.T) {
	entries, err := os.ReadDir("testdata/valid")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < 3 {
		t.Fatalf("only %d valid fixtures", len(entries))
	}
	for _, e := range entries {
		t.Run(e.Name(), func(t *testing.T) {
			set, err := Load(filepath.Join("testdata/valid", e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if len(set.Tests()) == 0 {
				t.Error("a valid fixture should carry test cases")
			}
			if fails := set.RunTests(); len(fails) != 0 {
				t.Errorf("test cases fail:\n%v", fails)
			}
			if w := set.Warnings(); len(w) != 0 {
				t.Errorf("warnings: %q", w)
			}
		})
	}
}

func TestCityHall(t *testing.T) {
	set, err := Load("testdata/valid/city-hall.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if set.ReportOnly() {
		t.Error("report_only: false read as true")
	}
	if got := set.Domestic(); !slices.Equal(got, []string{"JP"}) {
		t.Errorf("Domestic() = %q", got)
	}
	if set.DefaultAction() != Allow {
		t.Errorf("DefaultAction() = %v", set.DefaultAction())
	}
	if got := set.Sources(); !slices.Equal(got, []string{"testdata/valid/city-hall.yaml"}) {
		t.Errorf("Sources() = %q", got)
	}
	if !set.MayNeedBody() {
		t.Error("MayNeedBody() = false with file_parts, min_body_bytes and content_types rules")
	}
	if n := len(set.Tests()); n != 21 {
		t.Errorf("%d test cases, want 21", n)
	}

	var groups []string
	for _, g := range set.ClientGroups() {
		groups = append(groups, g.Name)
	}
	if want := []string{"general-affairs", "welfare", "tourism", "it"}; !slices.Equal(groups, want) {
		t.Errorf("client groups %q, want %q", groups, want)
	}
	welfare := set.ClientGroups()[1]
	if welfare.Title != "福祉課 (生活保護・介護)" || len(welfare.Networks) != 2 || welfare.Networks[1].String() != "2001:db8:20::/48" {
		t.Errorf("welfare group = %+v", welfare)
	}
	if it := set.ClientGroups()[3]; it.Networks[1].String() != "10.90.1.10/32" {
		t.Errorf("a bare address should become a /32, got %v", it.Networks[1])
	}

	var names []string
	for _, r := range set.Rules() {
		names = append(names, r.Name)
	}
	want := []string{
		"it-admin-tunnels", "own-services", "line-media-uploads", "welfare-files-abroad", "ai-prompts",
		"tourism-newsletter-images", "partner-sftp-gateway", "intranet", "saas-upload-api", "foreign-uploads",
	}
	if !slices.Equal(names, want) {
		t.Errorf("rules %q, want %q", names, want)
	}
	line := set.Rules()[2]
	if line.File != "testdata/valid/city-hall.yaml" || line.Line != 85 || line.Action != Block ||
		!strings.HasPrefix(line.Message, "LINEの画像") || !strings.HasPrefix(line.Alternative, "庁内チャット") {
		t.Errorf("line-media-uploads = %+v", line)
	}
	if r := set.Rules()[0]; !r.HasBudget || r.Budget != 50<<20 {
		t.Errorf("it-admin-tunnels budget = %d (has %v)", r.Budget, r.HasBudget)
	}

	cat := set.Catalog()
	chat := cat.Service("city-chat")
	if chat == nil || chat.Builtin || chat.StorageCountry != "JP" || chat.Title != "関所市 庁内チャット" || chat.Category != "chat" {
		t.Fatalf("city-chat = %+v", chat)
	}
	if svc, ep := cat.Lookup("files.chat.sekisho-city.example.jp"); svc != chat || ep == nil || ep.Name != "files" || ep.Service != chat {
		t.Errorf("files endpoint lookup = %v, %v", svc, ep)
	}
	lineSvc := cat.Service("line")
	if lineSvc == nil || lineSvc.Builtin {
		t.Fatalf("line should be the file's override: %+v", lineSvc)
	}
	if svc, ep := cat.Lookup("obs.line-scdn.net"); svc != lineSvc || ep == nil || ep.StorageCountry != "KR" {
		t.Errorf("obs.line-scdn.net = %v, %+v; want line/media declared KR", svc, ep)
	}
	// The override keeps its place in the catalog (and so its index).
	if cat.Services()[0] != lineSvc {
		t.Errorf("first service is %q, want the overridden line", cat.Services()[0].Name)
	}
}

// TestDirectory: every *.yaml and *.yml file of a folder, in name order;
// rules are appended in that order; hidden files (editor locks and swap
// files, ConfigMap internals) and other extensions are skipped.
func TestDirectory(t *testing.T) {
	dir := "testdata/valid/directory"
	src, err := ReadSources(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range src {
		names = append(names, s.Name)
	}
	want := []string{filepath.Join(dir, "10-base.yaml"), filepath.Join(dir, "20-welfare.yml")}
	if !slices.Equal(names, want) {
		t.Fatalf("sources %q, want %q", names, want)
	}
	// The same folder with the entries that must be skipped, made here
	// rather than trusted to survive a checkout (a global gitignore often
	// drops editor files): each would break the load if it were read.
	tmp := t.TempDir()
	for _, f := range []string{"10-base.yaml", "20-welfare.yml"} {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(tmp, f), string(data))
	}
	broken := "version: 1\nrules: {{{\n"
	for _, f := range []string{".#20-welfare.yml", ".20-welfare.yml.swp", ".hidden.yaml", "..data.yaml", "..2026_03_01/rules.yaml", "rules.yaml.bak", "README.txt"} {
		writeFile(t, filepath.Join(tmp, f), broken)
	}
	if err := os.Symlink("..2026_03_01", filepath.Join(tmp, "..data")); err != nil {
		t.Fatal(err)
	}
	tmpSrc, err := ReadSources(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if len(tmpSrc) != 2 || tmpSrc[0].Name != filepath.Join(tmp, "10-base.yaml") || tmpSrc[1].Name != filepath.Join(tmp, "20-welfare.yml") {
		t.Errorf("sources %v", tmpSrc)
	}
	if _, err := Load(tmp); err != nil {
		t.Error(err)
	}

	set, err := Compile(src)
	if err != nil {
		t.Fatal(err)
	}
	var rules []string
	for _, r := range set.Rules() {
		rules = append(rules, r.Name+"@"+filepath.Base(r.File))
	}
	wantRules := []string{
		"intranet@10-base.yaml", "dropbox-uploads@10-base.yaml",
		"welfare-care-records@20-welfare.yml", "foreign-uploads@20-welfare.yml",
	}
	if !slices.Equal(rules, wantRules) {
		t.Errorf("rules %q, want %q", rules, wantRules)
	}
	if got := set.Sources(); !slices.Equal(got, want) {
		t.Errorf("Sources() = %q", got)
	}
	// A service defined in the second file is usable by a rule there, and a
	// client group of the first file too.
	if set.Catalog().Service("care-records") == nil {
		t.Error("service of the second file missing")
	}

	// The order is the files' name order, not the order given.
	// Compile keeps the order it is given: reversed, foreign-uploads comes
	// before dropbox-uploads and the second file's own test case fails.
	set2, err := compile([]Source{src[1], src[0]})
	if err != nil {
		t.Fatal(err)
	}
	if set2.Rules()[0].Name != "welfare-care-records" {
		t.Errorf("first rule is %q", set2.Rules()[0].Name)
	}
	if set2.Hash() == set.Hash() {
		t.Error("the hash should depend on the order of the files")
	}
	want2 := `testdata/valid/directory/20-welfare.yml:19: test "dropbox upload is caught by the shared rule first" failed: ` +
		`expected rule "dropbox-uploads", got "foreign-uploads" (service dropbox, effective country US, destination foreign)`
	if fails := set2.RunTests(); fails.Error() != want2 {
		t.Errorf("reversed order: got\n%v\nwant\n%s", fails, want2)
	}
}

func TestReadSourcesErrors(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "notes.txt"), "not rules")
	tests := []struct {
		name, path, want string
	}{
		{"missing file", filepath.Join(dir, "nope.yaml"), "rules: stat " + filepath.Join(dir, "nope.yaml") + ": no such file or directory"},
		{"directory without rules", dir, "rules: no *.yaml or *.yml files in directory " + dir},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadSources(tt.path)
			if err == nil || err.Error() != tt.want {
				t.Errorf("got %v, want %q", err, tt.want)
			}
		})
	}
	t.Run("empty path is the default rules", func(t *testing.T) {
		src, err := ReadSources("")
		if err != nil || len(src) != 1 || src[0].Name != DefaultRulesName {
			t.Errorf("got %v, %v", src, err)
		}
	})
	t.Run("dangling symlink is skipped", func(t *testing.T) {
		d := t.TempDir()
		writeFile(t, filepath.Join(d, "a.yaml"), "version: 1\n")
		if err := os.Symlink(filepath.Join(d, "gone.yaml"), filepath.Join(d, "b.yaml")); err != nil {
			t.Skip(err)
		}
		src, err := ReadSources(d)
		if err != nil || len(src) != 1 {
			t.Errorf("got %d sources, %v", len(src), err)
		}
	})
	t.Run("folder named like a file is skipped", func(t *testing.T) {
		d := t.TempDir()
		writeFile(t, filepath.Join(d, "a.yaml"), "version: 1\n")
		writeFile(t, filepath.Join(d, "old.yaml", "x.yaml"), "broken: [")
		src, err := ReadSources(d)
		if err != nil || len(src) != 1 {
			t.Errorf("got %d sources, %v", len(src), err)
		}
	})
}

func TestDefaultRules(t *testing.T) {
	set, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if got := set.Sources(); !slices.Equal(got, []string{DefaultRulesName}) {
		t.Errorf("Sources() = %q", got)
	}
	if len(set.Rules()) != 1 || set.Rules()[0].Name != "block-foreign-uploads" {
		t.Errorf("rules = %v", set.Rules())
	}
	if len(set.Tests()) != 7 {
		t.Errorf("%d tests, want 7", len(set.Tests()))
	}
	if set.MayNeedBody() {
		t.Error("the default rules never need a body: upload is known from the headers")
	}
	if !set.SameSources(DefaultSources()) {
		t.Error("SameSources(DefaultSources()) = false")
	}
	if set.SameSources([]Source{{Name: DefaultRulesName, Data: append([]byte("# edited\n"), defaultRules...)}}) {
		t.Error("SameSources with other bytes = true")
	}
}

// TestCompileDefaults: what a file that says only "version: 1" gets.
func TestCompileDefaults(t *testing.T) {
	set := mustCompile(t, "version: 1\n")
	if !slices.Equal(set.Domestic(), []string{"JP"}) || set.ReportOnly() || set.DefaultAction() != Allow ||
		len(set.Rules()) != 0 || set.foreignBudget != 1<<20 || set.domesticBudget != Unlimited {
		t.Errorf("defaults: domestic %v report_only %v default %v rules %d budgets %d/%d",
			set.Domestic(), set.ReportOnly(), set.DefaultAction(), len(set.Rules()), set.foreignBudget, set.domesticBudget)
	}
	if len(set.Catalog().Services()) < 25 {
		t.Error("the built-in catalog is used by default")
	}
}

func TestCompileSettings(t *testing.T) {
	set := mustCompile(t, `version: 1
domestic: [jp, EEA]
report_only: true
default: block
tunnel_upload_budget:
  foreign: 64KiB
  domestic: 1.5GiB
`)
	if d := set.Domestic(); len(d) != 31 || !slices.Contains(d, "JP") || !slices.Contains(d, "NO") || slices.Contains(d, "CH") {
		t.Errorf("Domestic() = %v", d)
	}
	if !set.ReportOnly() || set.DefaultAction() != Block || set.foreignBudget != 64<<10 || set.domesticBudget != 3<<29 {
		t.Errorf("report_only %v default %v budgets %d/%d", set.ReportOnly(), set.DefaultAction(), set.foreignBudget, set.domesticBudget)
	}
}

// TestCompileErrors covers messages not worth a fixture file each.
func TestCompileErrors(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"rules not a list", "version: 1\nrules: block\n",
			`test.yaml:2:8: rules must be a list (lines starting with "- "), not "block"`},
		{"empty list", "version: 1\ndomestic: []\n",
			"test.yaml:2:11: domestic is an empty list; leave the field out instead"},
		{"empty string", "version: 1\ndefault: \"\"\n",
			"test.yaml:2:10: default must not be empty"},
		{"list where a value goes", "version: 1\ndefault: [allow]\n",
			"test.yaml:2:10: default must be a single value, not a list"},
		{"not a boolean", "version: 1\nreport_only: yes\n",
			`test.yaml:2:14: report_only must be true or false, not "yes"`},
		{"no hint when nothing is close", "version: 1\nfrobnicate: 1\n",
			`test.yaml:2:1: unknown field "frobnicate" in the top level (known fields: version, domestic, report_only, default, tunnel_upload_budget, country_groups, client_groups, builtin_catalog, services, rules, tests, inspection)`},
		{"budget field", "version: 1\ntunnel_upload_budget:\n  foriegn: 1MiB\n",
			`test.yaml:3:3: unknown field "foriegn" in tunnel_upload_budget; did you mean "foreign"? (known fields: foreign, domestic)`},
		{"budget size", "version: 1\ntunnel_upload_budget:\n  foreign: lots\n",
			`test.yaml:3:12: tunnel_upload_budget.foreign: "lots" is not a size: use a number of bytes or a size such as "64KiB", "1MiB", "10MB" or "unlimited"`},
		{"unlimited is not a body size", "version: 1\nrules:\n  - name: r\n    min_body_bytes: unlimited\n    action: block\n",
			`test.yaml:4:21: min_body_bytes: "unlimited" is not a size: use a number of bytes or a size such as "64KiB", "1MiB", "10MB"`},
		{"client group without networks", "version: 1\nclient_groups:\n  - name: empty\n",
			`test.yaml:3:5: client group "empty" has no networks`},
		{"client group defined twice", "version: 1\nclient_groups:\n  - name: a\n    networks: [10.0.0.0/8]\n  - name: a\n    networks: [10.0.0.0/8]\n",
			`test.yaml:5:11: client group "a" is defined twice`},
		{"client network not an address", "version: 1\nclient_groups:\n  - name: a\n    networks: [city-hall]\n",
			`test.yaml:4:16: client group a: "city-hall" is not an IP address or a network in CIDR form`},
		{"country group twice", "version: 1\ncountry_groups:\n  EEA: [FR]\n",
			`test.yaml:3:3: country group "EEA" is already defined`},
		{"country group member", "version: 1\ncountry_groups:\n  asia: [JP, Japan]\n",
			`test.yaml:3:14: country group asia: "Japan" is neither a country code (such as JP, KR, US) nor a country group (EEA, EU)`},
		{"service without domains", "version: 1\nservices:\n  - name: empty\n",
			`test.yaml:3:5: service "empty" has no domains`},
		{"service defined twice", "version: 1\nservices:\n  - name: a\n    domains: [a.example]\n  - name: a\n    domains: [b.example]\n",
			`test.yaml:5:11: service "a" is already defined at test.yaml:3`},
		{"service category", "version: 1\nservices:\n  - name: a\n    category: chatting\n    domains: [a.example]\n",
			`test.yaml:4:15: service "a": unknown category "chatting" (one of: chat, video, storage, office, ai, translation, dev, transfer, email, sns, cloud-storage, groupware, other)`},
		{"service storage country", "version: 1\nservices:\n  - name: a\n    storage_country: JA\n    domains: [a.example]\n",
			`test.yaml:4:22: storage_country: "JA" is not an ISO 3166-1 alpha-2 country code (such as JP, KR, US)`},
		{"service domain is an address", "version: 1\nservices:\n  - name: a\n    domains: [192.0.2.1]\n",
			`test.yaml:4:15: service "a": "192.0.2.1" is an IP address; services are matched by domain name`},
		{"service domain with a path", "version: 1\nservices:\n  - name: a\n    domains: [a.example/upload]\n",
			`test.yaml:4:15: service "a": domain "a.example/upload": write a plain domain; it matches itself and every subdomain`},
		{"service domain invalid", "version: 1\nservices:\n  - name: a\n    domains: [a..example]\n",
			`test.yaml:4:15: service "a": invalid host "a..example": empty label`},
		{"endpoint without name or domains", "version: 1\nservices:\n  - name: a\n    endpoints:\n      - storage_country: KR\n",
			"test.yaml:3:5: service \"a\" has no domains\ntest.yaml:5:9: service \"a\": an endpoint needs a name\ntest.yaml:5:9: service \"a\": endpoint \"\" has no domains"},
		{"rule domain wildcard in the middle", "version: 1\nrules:\n  - name: r\n    domains: [\"a.*.example\"]\n    action: block\n",
			`test.yaml:4:15: rule "r": domain "a.*.example": write example.com (itself and subdomains) or *.example.com (subdomains only)`},
		{"test with a bad URL", "version: 1\ntests:\n  - name: t\n    request: GET example.com\n    country: JP\n    expect: allow\n",
			`test.yaml:3:5: test "t": request "GET example.com": the URL must be absolute, such as https://example.com/path`},
		{"test CONNECT without port", "version: 1\ntests:\n  - name: t\n    request: CONNECT example.com\n    country: JP\n    expect: allow\n",
			`test.yaml:3:5: test "t": request "CONNECT example.com": invalid host "example.com": missing port`},
		{"test bad client", "version: 1\ntests:\n  - name: t\n    request: GET https://example.com/\n    client: pc-123\n    country: JP\n    expect: allow\n",
			`test.yaml:3:5: test "t": client "pc-123" is not an IP address`},
		{"test bad country", "version: 1\ntests:\n  - name: t\n    request: GET https://example.com/\n    country: Korea\n    expect: allow\n",
			`test.yaml:3:5: test "t": country "Korea" is not an ISO 3166-1 alpha-2 code, internal or unknown`},
		{"test without expect", "version: 1\ntests:\n  - name: t\n    request: GET https://example.com/\n    country: JP\n",
			`test.yaml:3:5: test "t": needs expect: allow, log or block`},
		{"test bad expect", "version: 1\ntests:\n  - name: t\n    request: GET https://example.com/\n    country: JP\n    expect: deny\n",
			`test.yaml:3:5: test "t": expect "deny" is not one of allow, log, block`},
		{"test bad content type", "version: 1\ntests:\n  - name: t\n    request: POST https://example.com/\n    country: JP\n    content_type: \"multipart/form-data; boundary\"\n    expect: allow\n",
			`test.yaml:3:5: test "t": content_type "multipart/form-data; boundary" is not a media type`},
		{"test without name", "version: 1\ntests:\n  - request: GET https://example.com/\n    country: JP\n    expect: allow\n",
			`test.yaml:3:5: a test needs a name`},
		{"test budget fails", "version: 1\ntests:\n  - name: t\n    request: CONNECT example.com:443\n    country: US\n    expect: allow\n    budget: 2MiB\n",
			`test.yaml:3: test "t" failed: expected budget 2MiB, got 1MiB (service other, effective country US, destination foreign)`},
		{"alias to a list", "version: 1\nx: &l [JP]\n",
			`test.yaml:2:1: unknown field "x" in the top level (known fields: version, domestic, report_only, default, tunnel_upload_budget, country_groups, client_groups, builtin_catalog, services, rules, tests, inspection)`},
		{"key not a name", "version: 1\n[a, b]: 1\n",
			"test.yaml:2:1: the top level has a key that is not a plain name"},
		{"no hint on a tie", "version: 1\nrules:\n  - name: r\n    action: block\n    ports: [443]\n    pathz: [/a]\n",
			`test.yaml:6:5: unknown field "pathz" in a rule; did you mean "paths"? (known fields: name, action, services, domains, networks, destinations, countries, clients, methods, ports, paths, upload, min_body_bytes, file_parts, content_types, upload_budget, message, alternative)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := compileErr(t, tt.text); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// TestAliases: anchors and aliases are YAML and work; only merge keys are
// refused.
func TestAliases(t *testing.T) {
	set := mustCompile(t, `version: 1
domestic: &home [JP]
rules:
  - name: a
    countries: *home
    action: allow
  - name: b
    countries: *home
    action: log
`)
	for _, r := range set.Rules() {
		if !r.countries.has("JP") {
			t.Errorf("rule %s: alias not followed", r.Name)
		}
	}
}

func TestTestCaseRun(t *testing.T) {
	set := mustCompile(t, `version: 1
rules:
  - name: block-foreign-uploads
    destinations: [foreign]
    upload: true
    action: block
`)
	tests := []struct {
		name string
		tc   TestCase
		want string
	}{
		{"passes", TestCase{Facts: req(t, "POST https://example.kr/", "KR", body(10)), Expect: Block, Rule: "block-foreign-uploads"}, ""},
		{"wrong action", TestCase{Facts: req(t, "GET https://example.kr/", "KR"), Expect: Block},
			"expected block, got allow (service other, effective country KR, destination foreign)"},
		{"wrong rule", TestCase{Facts: req(t, "POST https://example.kr/", "KR", body(10)), Expect: Block, Rule: "default"},
			`expected rule "default", got "block-foreign-uploads" (service other, effective country KR, destination foreign)`},
		{"wrong budget", TestCase{Facts: req(t, "CONNECT example.jp:443", "JP"), Expect: Allow, Budget: new(int64(1 << 20))},
			"expected budget 1MiB, got unlimited (service other, effective country JP, destination domestic)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.tc.Run(set)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// TestTestCaseFacts: what a test case in a file turns into.
func TestTestCaseFacts(t *testing.T) {
	set := mustCompile(t, `version: 1
client_groups:
  - name: staff
    networks: [10.0.0.0/8]
tests:
  - name: multipart
    request: post https://Upload.Example.COM:8443/a%20b/c?x=1
    client: "::ffff:10.1.2.3"
    country: kr
    body_bytes: 2KiB
    content_type: Multipart/Form-Data; boundary=x
    part_types: [IMAGE/PNG]
    expect: allow
  - name: encoded
    request: PUT http://192.0.2.7
    country: unknown
    content_type: multipart/form-data
    content_encoded: true
    expect: allow
  - name: websocket
    request: GET ws://chat.example.com/socket
    country: internal
    file_parts: false
    expect: allow
`)
	tcs := set.Tests()
	if len(tcs) != 3 {
		t.Fatalf("%d tests", len(tcs))
	}
	f := tcs[0].Facts
	if f.Method != "POST" || f.Host != "upload.example.com" || f.Port != 8443 || f.Path != "/a b/c" ||
		f.Client.String() != "10.1.2.3" || f.Country != "KR" || !f.Final || f.Stream || f.Addr.IsValid() {
		t.Errorf("facts = %+v", f)
	}
	if b := f.Body; !b.Present || b.Size != 2048 || !b.SizeExact || b.ContentType != "multipart/form-data" ||
		b.FileParts != TriYes || !slices.Equal(b.PartTypes, []string{"image/png"}) || !b.PartsComplete || b.Encoded {
		t.Errorf("body = %+v", b)
	}
	if tcs[0].File != "test.yaml" || tcs[0].Line != 6 {
		t.Errorf("position %s:%d", tcs[0].File, tcs[0].Line)
	}
	f = tcs[1].Facts
	if f.Host != "192.0.2.7" || f.Port != 80 || f.Path != "/" || f.Addr.String() != "192.0.2.7" || f.Country != CountryUnknown {
		t.Errorf("facts = %+v", f)
	}
	if b := f.Body; b.Present || b.FileParts != TriUnknown || b.PartsComplete || !b.Encoded {
		t.Errorf("encoded multipart body = %+v", b)
	}
	f = tcs[2].Facts
	if !f.Stream || f.Port != 80 || f.Country != CountryInternal || f.Body.FileParts != TriNo {
		t.Errorf("websocket facts = %+v", f)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in        string
		unlimited bool
		want      int64
		err       string
	}{
		{"0", false, 0, ""},
		{"1048576", false, 1 << 20, ""},
		{" 64KiB ", false, 64 << 10, ""},
		{"64 KiB", false, 64 << 10, ""},
		{"1MiB", false, 1 << 20, ""},
		{"2GiB", false, 2 << 30, ""},
		{"1TiB", false, 1 << 40, ""},
		{"10MB", false, 10_000_000, ""},
		{"1KB", false, 1000, ""},
		{"3GB", false, 3_000_000_000, ""},
		{"2TB", false, 2_000_000_000_000, ""},
		{"4K", false, 4096, ""},
		{"4M", false, 4 << 20, ""},
		{"1G", false, 1 << 30, ""},
		{"512B", false, 512, ""},
		{"1.5GiB", false, 3 << 29, ""},
		{"0.5KiB", false, 512, ""},
		{"unlimited", true, Unlimited, ""},
		{"Unlimited", true, Unlimited, ""},
		{"unlimited", false, 0, `"unlimited" is not a size: use a number of bytes or a size such as "64KiB", "1MiB", "10MB"`},
		{"10 parsecs", false, 0, `"10 parsecs" is not a size: use a number of bytes or a size such as "64KiB", "1MiB", "10MB"`},
		{"lots", true, 0, `"lots" is not a size: use a number of bytes or a size such as "64KiB", "1MiB", "10MB" or "unlimited"`},
		{"-1", false, 0, `size "-1" is out of range`},
		{"-1KiB", false, 0, `size "-1KiB" is out of range`},
		{"-0.5MiB", false, 0, `"-0.5MiB" is not a size: use a number of bytes or a size such as "64KiB", "1MiB", "10MB"`},
		{"9223372036854775807", false, 1<<63 - 1, ""},
		{"9223372036854775807KiB", false, 0, `size "9223372036854775807KiB" is out of range`},
		{"1e30", false, 0, `"1e30" is not a size: use a number of bytes or a size such as "64KiB", "1MiB", "10MB"`},
		{"NaN", false, 0, `"NaN" is not a size: use a number of bytes or a size such as "64KiB", "1MiB", "10MB"`},
		{"Inf", false, 0, `"Inf" is not a size: use a number of bytes or a size such as "64KiB", "1MiB", "10MB"`},
		{"KiB", false, 0, `"KiB" is not a size: use a number of bytes or a size such as "64KiB", "1MiB", "10MB"`},
		{"", false, 0, `"" is not a size: use a number of bytes or a size such as "64KiB", "1MiB", "10MB"`},
		{"1kb", false, 0, `"1kb" is not a size: use a number of bytes or a size such as "64KiB", "1MiB", "10MB"`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in, tt.unlimited)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
			}
			if got != tt.want || gotErr != tt.err {
				t.Errorf("ParseSize(%q, %v) = %d, %q; want %d, %q", tt.in, tt.unlimited, got, gotErr, tt.want, tt.err)
			}
		})
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{Unlimited, "unlimited"},
		{0, "0B"},
		{1000, "1000B"},
		{1024, "1KiB"},
		{1536, "1536B"},
		{3 << 20, "3MiB"},
		{2 << 30, "2GiB"},
		{1<<30 + 1<<20, "1025MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := FormatSize(tt.in); got != tt.want {
				t.Errorf("FormatSize(%d) = %q, want %q", tt.in, got, tt.want)
			}
			// What FormatSize writes, ParseSize reads back.
			if back, err := ParseSize(tt.want, true); err != nil || back != tt.in {
				t.Errorf("ParseSize(%q) = %d, %v", tt.want, back, err)
			}
		})
	}
}

func TestNames(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{Allow.String(), "allow"}, {Log.String(), "log"}, {Block.String(), "block"}, {Action(9).String(), "invalid"},
		{Internal.String(), "internal"}, {Domestic.String(), "domestic"}, {Foreign.String(), "foreign"},
		{Unknown.String(), "unknown"}, {Destination(9).String(), "invalid"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
	for _, s := range []string{"allow", "log", "block"} {
		if a, ok := ParseAction(s); !ok || a.String() != s {
			t.Errorf("ParseAction(%q) = %v, %v", s, a, ok)
		}
	}
	for _, s := range []string{"Allow", "deny", "", "invalid"} {
		if _, ok := ParseAction(s); ok {
			t.Errorf("ParseAction(%q) accepted", s)
		}
	}
}

func TestValidCountry(t *testing.T) {
	for _, c := range []string{"JP", "KR", "US", "XK", "ZW", "AD"} {
		if !ValidCountry(c) {
			t.Errorf("ValidCountry(%q) = false", c)
		}
	}
	for _, c := range []string{"JA", "jp", "EU", "UK", "XX", "J", "JPN", "", "internal", "unknown", "J\x00"} {
		if ValidCountry(c) {
			t.Errorf("ValidCountry(%q) = true", c)
		}
	}
	if n := len(validCountries.codes()); n != 250 {
		t.Errorf("%d valid codes, want 249 ISO codes + XK", n)
	}
	for name, members := range builtinCountryGroups {
		for _, m := range strings.Fields(members) {
			if !ValidCountry(m) {
				t.Errorf("group %s: %q is not a country", name, m)
			}
		}
	}
	eu, eea := strings.Fields(builtinCountryGroups["EU"]), strings.Fields(builtinCountryGroups["EEA"])
	if len(eu) != 27 || len(eea) != 30 {
		t.Errorf("EU has %d members, EEA %d; want 27 and 30", len(eu), len(eea))
	}
}

func TestUnwrapsToError(t *testing.T) {
	_, err := Load("testdata/invalid/bad-country.yaml")
	var e *Error
	if !errors.As(err, &e) || e.Line != 4 || e.Column != 17 || e.File != "testdata/invalid/bad-country.yaml" {
		t.Errorf("errors.As = %+v", e)
	}
}

package rules

import (
	"os"
	"testing"
)

// loadSet compiles a rules file of testdata.
func loadSet(tb testing.TB, path string) *Set {
	tb.Helper()
	set, err := Load(path)
	if err != nil {
		tb.Fatal(err)
	}
	return set
}

// benchFacts are the requests the benchmarks and the allocation test use.
func benchFacts(tb testing.TB) map[string]Facts {
	client := client("10.10.1.1")
	return map[string]Facts{
		// Walks every rule of the 30-rule set to the catch-all.
		"foreign-upload": req(tb, "POST https://uploads.example.com/files", "US", client, body(64<<10),
			ctype("application/octet-stream"), addr("192.0.2.10")),
		// Matches no rule: the default.
		"domestic-download": req(tb, "GET https://www.city.example.jp/index.html", "JP", client, addr("192.0.2.20")),
	}
}

func BenchmarkDecide(b *testing.B) {
	sets := []struct {
		name string
		set  *Set
	}{
		{"default", loadSet(b, "")},
		{"30-rules", loadSet(b, "testdata/valid/thirty-rules.yaml")},
	}
	facts := benchFacts(b)
	for _, s := range sets {
		for _, name := range []string{"foreign-upload", "domestic-download"} {
			b.Run(s.name+"/"+name, func(b *testing.B) {
				f := facts[name]
				s.set.Prepare(&f)
				b.ReportAllocs()
				for b.Loop() {
					_ = s.set.Decide(&f)
				}
			})
		}
	}
}

func BenchmarkPrepare(b *testing.B) {
	set := loadSet(b, "testdata/valid/thirty-rules.yaml")
	tests := []struct {
		name string
		f    Facts
	}{
		{"service-endpoint", req(b, "POST https://a.b.obs.line-scdn.net/upload", "JP", client("10.100.3.4"))},
		{"service-deep-host", req(b, "GET https://x1.x2.x3.x4.x5.slack.com/", "US", client("10.100.3.4"))},
		{"no-service", req(b, "GET https://www.example.org/", "US", client("10.100.3.4"))},
		{"client-group-last", req(b, "GET https://www.example.org/", "US", client("10.90.0.7"))},
		{"client-no-group-v6", req(b, "GET https://www.example.org/", "US", client("2001:db8:ffff::1"))},
		{"ip-literal", req(b, "GET https://192.0.2.1/", "US", client("10.10.1.1"))},
	}
	for _, tt := range tests {
		b.Run(tt.name, func(b *testing.B) {
			f := tt.f
			b.ReportAllocs()
			for b.Loop() {
				set.Prepare(&f)
			}
		})
	}
}

func BenchmarkPrepareDecide(b *testing.B) {
	set := loadSet(b, "testdata/valid/city-hall.yaml")
	f := req(b, "POST https://obs.line-scdn.net/r/talk/m/upload", "JP", client("10.10.3.4"), body(2<<20), ctype("image/jpeg"))
	b.ReportAllocs()
	for b.Loop() {
		g := f
		set.Prepare(&g)
		_ = set.Decide(&g)
	}
}

func BenchmarkNormalizeHost(b *testing.B) {
	for _, h := range []struct{ name, host string }{
		{"canonical", "files.slack.com"},
		{"uppercase", "Files.Slack.COM."},
		{"idn", "bücher.example.de"},
		{"ipv4", "192.0.2.1"},
		{"ipv4-whatwg", "0x7f.1"},
		{"ipv6", "[2001:db8::1]"},
	} {
		b.Run(h.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := NormalizeHost(h.host); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCompile is the cost of a reload (without reading files).
func BenchmarkCompile(b *testing.B) {
	data, err := os.ReadFile("testdata/valid/city-hall.yaml")
	if err != nil {
		b.Fatal(err)
	}
	src := []Source{{Name: "city-hall.yaml", Data: data}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Compile(src); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDecideNoAlloc: Prepare and Decide run on every request and must not
// allocate, whatever the rules check (paths with globs, domains, body
// facts) and whatever the outcome (match, default, NeedBody, fail closed).
func TestDecideNoAlloc(t *testing.T) {
	thirty := loadSet(t, "testdata/valid/thirty-rules.yaml")
	city := loadSet(t, "testdata/valid/city-hall.yaml")
	facts := benchFacts(t)
	tests := []struct {
		name string
		set  *Set
		f    Facts
	}{
		{"default rules, foreign upload", loadSet(t, ""), facts["foreign-upload"]},
		{"30 rules, foreign upload", thirty, facts["foreign-upload"]},
		{"30 rules, domestic download", thirty, facts["domestic-download"]},
		{"glob path", thirty, req(t, "POST https://files.example-saas.com/upload/2026/a.pdf", "JP", body(10))},
		{"need body", thirty, req(t, "POST https://example.com/", "US", client("10.20.0.1"), chunked(10), ctype("multipart/form-data"))},
		{"fail closed", thirty, req(t, "POST https://example.com/", "US", client("10.20.0.1"), chunked(10), ctype("multipart/form-data"), final())},
		{"stream budget", city, req(t, "CONNECT github.com:443", "US", client("10.90.1.10"))},
		{"declared country", city, req(t, "POST https://obs.line-scdn.net/upload", "JP", body(10), ctype("image/png"))},
		{"IPv6 client and address", city, req(t, "CONNECT [2001:db8:ffff::5]:22", "KR", client("2001:db8:20::1"), addr("2001:db8:ffff::5"))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var d Decision
			allocs := testing.AllocsPerRun(200, func() {
				f := tt.f
				tt.set.Prepare(&f)
				d = tt.set.Decide(&f)
			})
			if allocs != 0 {
				t.Errorf("%v allocations (decided %s by %s)", allocs, d.Action, d.RuleName())
			}
		})
	}
}

package pages

import (
	"crypto/sha256"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"
	"time"
)

// assertOnlyLocalLinks checks a page of sekisho's own: it loads nothing
// (no src, no stylesheet, no url()), and its links stay on sekisho.
func assertOnlyLocalLinks(t *testing.T, page string, allowScript bool) {
	t.Helper()
	lower := strings.ToLower(page)
	bad := []string{"src=", "<link", "<img", "<iframe", "@import", "url(", "<form"}
	if !allowScript {
		bad = append(bad, "<script")
	}
	for _, b := range bad {
		if strings.Contains(lower, b) {
			t.Errorf("page contains %q: it must be self-contained", b)
		}
	}
	for _, m := range regexp.MustCompile(`href="([^"]*)"`).FindAllStringSubmatch(page, -1) {
		if !strings.HasPrefix(m[1], "/") || strings.HasPrefix(m[1], "//") {
			t.Errorf("link %q leaves sekisho", m[1])
		}
	}
}

func onboarding() *Onboarding {
	return &Onboarding{
		Intercept:   true,
		CASubject:   "sekisho CA — Example City",
		Fingerprint: "AB:CD:EF:01",
		CANotAfter:  time.Date(2036, 6, 1, 0, 0, 0, 0, time.UTC),
		PACURL:      "http://proxy1.city.example.lg.jp:3128/proxy.pac",
		Helpdesk:    "情報政策課 内線 1234",
	}
}

func TestRenderOnboarding(t *testing.T) {
	ct, body := RenderOnboarding(onboarding())
	if ct != "text/html; charset=utf-8" {
		t.Errorf("content type %q", ct)
	}
	page := string(body)
	for _, want := range []string{
		"sekisho（関所）の設定方法", "Setting up this PC or phone for sekisho",
		"forward proxy", "プロキシ",
		`<a href="/proxy.pac"><code>http://proxy1.city.example.lg.jp:3128/proxy.pac</code></a>`,
		`<a href="/ca.crt">ca.crt</a>`, `<a href="/ca.der">ca.der</a>`,
		`<code class="fp" id="fingerprint">AB:CD:EF:01</code>`, "SHA-256",
		"<code>sekisho CA — Example City</code>", "2036-06-01",
		"<h3>Windows（Edge、Chrome）</h3>", "<h3>macOS（Safari、Chrome）</h3>", "<h3>iPhone / iPad</h3>", "<h3>Android</h3>", "<h3>Firefox</h3>",
		"信頼されたルート証明機関", "Trusted Root Certification Authorities", "Always Trust", "Certificate Trust Settings",
		"Trust this CA to identify websites",
		`<a href="/selftest">`,
		"<strong>情報政策課 内線 1234</strong>",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("start page lacks %q", want)
		}
	}
	assertOnlyLocalLinks(t, page, false)

	o := onboarding()
	o.Intercept, o.Fingerprint, o.CASubject = false, "", ""
	_, body = RenderOnboarding(o)
	page = string(body)
	if strings.Contains(page, "/ca.crt") || strings.Contains(page, "SHA-256") {
		t.Error("the CA is offered although interception is off")
	}
	if !strings.Contains(page, "TLS interception is off") {
		t.Error("no word that there is no CA to install")
	}
}

func TestRenderOnboardingEscapes(t *testing.T) {
	o := onboarding()
	o.PACURL, o.Helpdesk, o.CASubject = hostile, hostile, hostile
	_, body := RenderOnboarding(o)
	page := string(body)
	if n := strings.Count(page, escapedHostile); n != 4 { // PAC URL, subject, helpdesk (ja and en)
		t.Errorf("escaped user text found %d times, want 4", n)
	}
	assertOnlyLocalLinks(t, strings.ReplaceAll(page, escapedHostile, ""), false)
}

func TestRenderSelftest(t *testing.T) {
	for _, intercept := range []bool{true, false} {
		ct, body := RenderSelftest(&Selftest{Intercept: intercept, PACURL: "http://proxy1:3128/proxy.pac", Client: "10.1.2.3", Helpdesk: "内線 1234"})
		if ct != "text/html; charset=utf-8" {
			t.Errorf("content type %q", ct)
		}
		page := string(body)
		upload, state := "http://upload-check.selftest.sekisho.invalid/", "off"
		if intercept {
			upload, state = "https://upload-check.selftest.sekisho.invalid/", "on"
		}
		for _, want := range []string{
			`data-intercept="` + state + `"`,
			`data-pac-url="http://pac-check.selftest.sekisho.invalid/"`,
			`data-ca-url="https://ca-check.selftest.sekisho.invalid/"`,
			`data-upload-url="` + upload + `"`,
			`id="check-pac"`, `id="check-ca"`, `id="check-upload"`,
			"ブラウザが sekisho を経由している", "sekisho の CA 証明書が信頼されている", "国外へのテスト送信が止められる",
			"<code>http://proxy1:3128/proxy.pac</code>", "<code>10.1.2.3</code>", "<strong>内線 1234</strong>",
		} {
			if !strings.Contains(page, want) {
				t.Errorf("intercept=%v: self-test page lacks %q", intercept, want)
			}
		}
		assertOnlyLocalLinks(t, page, true)

		// The one script runs under the CSP by its hash: the page's script
		// must be exactly the hashed text.
		scripts := regexp.MustCompile(`(?s)<script>(.*?)</script>`).FindAllStringSubmatch(page, -1)
		if len(scripts) != 1 || strings.Count(page, "<script") != 1 {
			t.Fatalf("want one inline script, have %d", len(scripts))
		}
		sum := sha256.Sum256([]byte(scripts[0][1]))
		if !strings.Contains(SelftestCSP, "script-src 'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'") {
			t.Errorf("the script's hash is not the one in the CSP %q", SelftestCSP)
		}
	}
	for _, want := range []string{
		"default-src 'none'",
		"connect-src http://pac-check.selftest.sekisho.invalid https://ca-check.selftest.sekisho.invalid http://upload-check.selftest.sekisho.invalid https://upload-check.selftest.sekisho.invalid;",
		"form-action 'none'", "frame-ancestors 'none'",
	} {
		if !strings.Contains(SelftestCSP, want) {
			t.Errorf("SelftestCSP lacks %q: %s", want, SelftestCSP)
		}
	}
	if strings.Contains(SelftestCSP, "unsafe-eval") || strings.Contains(SelftestCSP, "script-src 'unsafe-inline'") {
		t.Errorf("SelftestCSP allows arbitrary scripts: %s", SelftestCSP)
	}
}

func TestIsSelftestHost(t *testing.T) {
	for host, want := range map[string]bool{
		"pac-check.selftest.sekisho.invalid":    true,
		"ca-check.selftest.sekisho.invalid":     true,
		"upload-check.selftest.sekisho.invalid": true,
		"other.selftest.sekisho.invalid":        true,
		"selftest.sekisho.invalid":              true,
		"xselftest.sekisho.invalid":             false,
		"selftest.sekisho.invalid.example.com":  false,
		"sekisho.invalid":                       false,
	} {
		if got := IsSelftestHost(host); got != want {
			t.Errorf("IsSelftestHost(%q) = %v, want %v", host, got, want)
		}
	}
}

// TestRenderBlockWhy: the block page says why in words, by the kind of
// destination, and that nothing was sent.
func TestRenderBlockWhy(t *testing.T) {
	tests := []struct {
		dest, country string
		want          []string
	}{
		{"foreign", "KR", []string{"送信先のサーバーは国外（KR 韓国 / South Korea）にあります。", "The destination's server is outside the country (KR 韓国 / South Korea).", "“block-foreign-uploads”"}},
		{"unknown", "unknown", []string{"送信先のサーバーがどの国にあるか確認できません。", "such destinations count as abroad"}},
		{"domestic", "JP", []string{"この送信は規則「block-foreign-uploads」に該当したため、送信前に止めました。", "The upload matched the rule “block-foreign-uploads” and was stopped before it was sent."}},
	}
	for _, tt := range tests {
		t.Run(tt.dest, func(t *testing.T) {
			b := block()
			b.Destination, b.Country, b.Dialed = tt.dest, tt.country, tt.country
			_, body := RenderBlock(b, false)
			page := string(body)
			for _, w := range append(tt.want, "送信しようとしたデータは、送信先には届いていません。", "None of the data you tried to send reached the destination.", "<h2>理由 <span class=\"en\">Why</span></h2>", "@media print") {
				if !strings.Contains(page, w) {
					t.Errorf("page lacks %q", w)
				}
			}
		})
	}
	b := block()
	b.Service, b.ServiceTitle = "other", "—"
	if _, body := RenderBlock(b, false); !strings.Contains(string(body), "カタログにないサービス") {
		t.Error("a destination outside the catalog is not named as such")
	}
}

package pages

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestWantsJSON(t *testing.T) {
	tests := []struct {
		accept string
		want   bool
	}{
		{"application/json", true},
		{"Application/JSON", true},
		{"application/problem+json", true},
		{"application/vnd.api+json; charset=utf-8", true},
		{"application/json, text/plain, */*", true}, // axios, fetch wrappers
		{"text/html", false},
		{"text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8", false}, // Chrome
		{"application/xhtml+xml, application/json", false},
		{"text/html, application/json", false},
		{"*/*", false}, // curl
		{"", false},
		{"text/plain", false},
		{"image/png, application/json", true}, // the first HTML or JSON type decides
		{"garbage;;, application/json", true},
		// q-values are not weighed: the first HTML or JSON type listed wins.
		{"application/json;q=0.1, text/html", true},
		{"text/html;q=0.1, application/json", false},
		{"text/html;q=0.5, application/json;q=0.9", false},
	}
	for _, tt := range tests {
		name := tt.accept
		if name == "" {
			name = "empty"
		}
		t.Run(name, func(t *testing.T) {
			if got := WantsJSON(tt.accept); got != tt.want {
				t.Errorf("WantsJSON(%q) = %v, want %v", tt.accept, got, tt.want)
			}
		})
	}
}

func TestCountryName(t *testing.T) {
	tests := []struct{ code, want string }{
		{"internal", "組織内ネットワーク / internal network"},
		{"unknown", "不明 / unknown (treated as foreign)"},
		{"", "不明 / unknown (treated as foreign)"},
		{"KR", "KR 韓国 / South Korea"},
		{"JP", "JP 日本 / Japan"},
		{"US", "US アメリカ合衆国 / United States"},
		{"CN", "CN 中国 / China"},
		{"ZZ", "ZZ"},
		{"BT", "BT"},
		{"kr", "kr"}, // codes are upper case; a lower-case one is shown as is
	}
	for _, tt := range tests {
		name := tt.code
		if name == "" {
			name = "empty"
		}
		t.Run(name, func(t *testing.T) {
			if got := CountryName(tt.code); got != tt.want {
				t.Errorf("CountryName(%q) = %q, want %q", tt.code, got, tt.want)
			}
		})
	}
}

func TestCountryNamesAreWellFormed(t *testing.T) {
	code := regexp.MustCompile(`^[A-Z]{2}$`)
	for c, n := range countryNames {
		ja, en, ok := strings.Cut(n, " / ")
		if !code.MatchString(c) || !ok || ja == "" || en == "" {
			t.Errorf("countryNames[%q] = %q, want a two-letter code and \"日本語 / English\"", c, n)
		}
	}
}

func block() *Block {
	return &Block{
		RequestID:    "req-7f3a9c",
		Service:      "line",
		ServiceTitle: "LINE",
		Host:         "obs.line-scdn.net",
		Country:      "KR",
		Dialed:       "KR",
		Method:       "POST",
		BodyBytes:    5 << 20,
		Rule:         "block-foreign-uploads",
		Reason:       "住民の個人情報を国外のサーバーに送信することはできません。",
		Alternative:  "庁内ファイル共有（\\\\fileserver\\share）を使ってください。",
		Helpdesk:     "情報政策課 内線 1234",
	}
}

// assertNoExternal checks that an HTML page loads nothing from anywhere.
func assertNoExternal(t *testing.T, page string) {
	t.Helper()
	lower := strings.ToLower(page)
	for _, bad := range []string{"http://", "https://", "<script", "<link", "<img", "<iframe", "@import", "url(", "src=", "href="} {
		if strings.Contains(lower, bad) {
			i := strings.Index(lower, bad)
			t.Errorf("page contains %q (…%s…): it must be self-contained", bad, page[max(0, i-40):min(len(page), i+60)])
		}
	}
}

func TestRenderBlockHTML(t *testing.T) {
	ct, body := RenderBlock(block(), false)
	if ct != "text/html; charset=utf-8" {
		t.Errorf("content type %q", ct)
	}
	page := string(body)
	for _, want := range []string{
		"<!DOCTYPE html>",
		`<html lang="ja">`,
		`<meta charset="utf-8">`,
		"この送信はブロックされました",          // Japanese title
		"This upload was blocked", // English title
		"<dd>LINE</dd>",
		"<code>obs.line-scdn.net</code>",
		"KR 韓国 / South Korea",
		"<code>POST</code> (5.0 MiB)",
		"<code>block-foreign-uploads</code>",
		"住民の個人情報を国外のサーバーに送信することはできません。",
		"What to use instead",
		`庁内ファイル共有（\\fileserver\share）を使ってください。`,
		"<strong>情報政策課 内線 1234</strong>",
		"<code>req-7f3a9c</code>",
		"受付番号",
		"Request ID",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("block page lacks %q", want)
		}
	}
	if strings.Contains(page, "国外のサーバーへのデータ送信は、この組織の規則で許可されていません") {
		t.Error("the default explanation is shown although the rule has its own message")
	}
	if strings.Contains(page, "declared storage country") {
		t.Error("declared-country note shown without a declared country")
	}
	assertNoExternal(t, page)
}

func TestRenderBlockHTMLVariants(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*Block)
		want    []string
		notWant []string
	}{
		{
			name: "declared country differs from dialed",
			edit: func(b *Block) { b.Country, b.Declared, b.Dialed = "KR", "KR", "JP" },
			want: []string{"KR 韓国 / South Korea — 保存先として登録された国 / declared storage country (接続先 connected to: JP 日本 / Japan)"},
		},
		{
			name:    "declared country equals dialed",
			edit:    func(b *Block) { b.Country, b.Declared, b.Dialed = "KR", "KR", "KR" },
			want:    []string{"KR 韓国 / South Korea"},
			notWant: []string{"declared storage country"},
		},
		{
			name:    "declared country not the effective one",
			edit:    func(b *Block) { b.Country, b.Declared, b.Dialed = "US", "KR", "US" },
			want:    []string{"US アメリカ合衆国 / United States"},
			notWant: []string{"declared storage country"},
		},
		{
			name: "unknown country",
			edit: func(b *Block) { b.Country, b.Dialed = "unknown", "unknown" },
			want: []string{"不明 / unknown (treated as foreign)"},
		},
		{
			name:    "no rule message: default explanation",
			edit:    func(b *Block) { b.Reason = "" },
			want:    []string{"国外のサーバーへのデータ送信は、この組織の規則で許可されていません。", "Sending data to servers outside the country is not allowed"},
			notWant: []string{"住民の個人情報"},
		},
		{
			name:    "no alternative",
			edit:    func(b *Block) { b.Alternative = "" },
			notWant: []string{"What to use instead", "代わりに使えるもの"},
		},
		{
			name:    "no helpdesk: generic contact",
			edit:    func(b *Block) { b.Helpdesk = "" },
			want:    []string{"情報システム担当", "your IT helpdesk"},
			notWant: []string{"<strong>"},
		},
		{
			name:    "unknown size",
			edit:    func(b *Block) { b.BodyBytes = -1 },
			want:    []string{"<code>POST</code></dd>"},
			notWant: []string{"MiB", "bytes)"},
		},
		{
			name: "small size",
			edit: func(b *Block) { b.BodyBytes = 512 },
			want: []string{"(512 bytes)"},
		},
		{
			name: "GiB size",
			edit: func(b *Block) { b.BodyBytes = 3 << 30 },
			want: []string{"(3.0 GiB)"},
		},
		{
			name:    "no method",
			edit:    func(b *Block) { b.Method = "" },
			notWant: []string{"<code>POST</code>"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := block()
			tt.edit(b)
			_, body := RenderBlock(b, false)
			page := string(body)
			for _, w := range tt.want {
				if !strings.Contains(page, w) {
					t.Errorf("page lacks %q", w)
				}
			}
			for _, w := range tt.notWant {
				if strings.Contains(page, w) {
					t.Errorf("page contains %q", w)
				}
			}
			assertNoExternal(t, page)
		})
	}
}

// hostile is user-controlled text: the request's host and the rule's
// admin-written fields must be shown as text, never as markup.
const hostile = `<script src="https://evil.example/x.js"></script><img src=http://evil.example/p.gif>"'&`

// escapedHostile is hostile as html/template writes it in text.
const escapedHostile = "&lt;script src=&#34;https://evil.example/x.js&#34;&gt;&lt;/script&gt;&lt;img src=http://evil.example/p.gif&gt;&#34;&#39;&amp;"

func TestRenderBlockEscapes(t *testing.T) {
	b := block()
	b.Host = "a" + hostile + ".example"
	b.ServiceTitle = hostile
	b.Reason = hostile
	b.Alternative = hostile
	b.Helpdesk = hostile
	b.Rule = hostile
	b.RequestID = hostile
	_, body := RenderBlock(b, false)
	page := string(body)
	// Host, service, reason, alternative, helpdesk (ja and en), rule (in
	// the explanation, ja and en, and in the list), id.
	if n := strings.Count(page, escapedHostile); n != 10 {
		t.Errorf("escaped user text found %d times, want 10", n)
	}
	lower := strings.ToLower(page)
	for _, bad := range []string{"<script", "<img"} {
		if strings.Contains(lower, bad) {
			t.Errorf("user text reached the page as markup: %q", bad)
		}
	}
	// The only URLs are inside the escaped user text.
	assertNoExternal(t, strings.ReplaceAll(page, escapedHostile, ""))
}

func TestRenderBlockJSON(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Block)
		want map[string]any
	}{
		{
			name: "full",
			edit: func(b *Block) { b.Declared, b.Dialed = "KR", "JP" },
			want: map[string]any{
				"error":            "upload_blocked",
				"message":          "Upload blocked by sekisho: sending data to this destination is not allowed.",
				"message_ja":       "sekisho によりブロックされました。この送信先へのデータ送信は許可されていません。",
				"request_id":       "req-7f3a9c",
				"service":          "line",
				"host":             "obs.line-scdn.net",
				"country":          "KR",
				"rule":             "block-foreign-uploads",
				"reason":           "住民の個人情報を国外のサーバーに送信することはできません。",
				"declared_country": "KR",
				"dialed_country":   "JP",
				"alternative":      `庁内ファイル共有（\\fileserver\share）を使ってください。`,
				"helpdesk":         "情報政策課 内線 1234",
			},
		},
		{
			name: "optional fields left out",
			edit: func(b *Block) { b.Reason, b.Alternative, b.Helpdesk, b.Declared = "", "", "", "" },
			want: map[string]any{
				"error":      "upload_blocked",
				"message":    "Upload blocked by sekisho: sending data to this destination is not allowed.",
				"message_ja": "sekisho によりブロックされました。この送信先へのデータ送信は許可されていません。",
				"request_id": "req-7f3a9c",
				"service":    "line",
				"host":       "obs.line-scdn.net",
				"country":    "KR",
				"rule":       "block-foreign-uploads",
			},
		},
		{
			name: "hostile host is data",
			edit: func(b *Block) { b.Host = hostile; b.Reason, b.Alternative, b.Helpdesk = "", "", "" },
			want: map[string]any{
				"error":      "upload_blocked",
				"message":    "Upload blocked by sekisho: sending data to this destination is not allowed.",
				"message_ja": "sekisho によりブロックされました。この送信先へのデータ送信は許可されていません。",
				"request_id": "req-7f3a9c",
				"service":    "line",
				"host":       hostile,
				"country":    "KR",
				"rule":       "block-foreign-uploads",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := block()
			tt.edit(b)
			ct, body := RenderBlock(b, true)
			if ct != "application/json; charset=utf-8" {
				t.Errorf("content type %q", ct)
			}
			assertJSON(t, body, tt.want)
			if strings.Contains(string(body), "<script") {
				t.Error("JSON body carries a raw <script (it should be \\u003c-escaped)")
			}
		})
	}
}

func assertJSON(t *testing.T, body []byte, want map[string]any) {
	t.Helper()
	if len(body) == 0 || body[len(body)-1] != '\n' {
		t.Errorf("JSON body does not end in a newline")
	}
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("invalid JSON: %v\n%s", err, body)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %#v, want %#v", k, got[k], v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected field %s = %#v", k, got[k])
		}
	}
}

func problem(status int) *Problem {
	return &Problem{
		Status:    status,
		Code:      "destination_unreachable",
		Title:     "Destination unreachable",
		TitleJA:   "接続できませんでした",
		Detail:    "The server did not answer.",
		DetailJA:  "接続先のサーバーが応答しませんでした。",
		Host:      "files.example.kr",
		Why:       "dial tcp 203.0.113.9:443: i/o timeout",
		RequestID: "req-0042",
		Helpdesk:  "内線 1234",
	}
}

func TestRenderProblemHTML(t *testing.T) {
	tests := []struct {
		status    int
		class     string
		mark      string
		otherMark string
	}{
		{status: http.StatusForbidden, class: `<header class="block">`, mark: "&#x26D4;", otherMark: "&#x26A0;"},
		{status: http.StatusBadRequest, class: `<header class="warn">`, mark: "&#x26A0;&#xFE0F;", otherMark: "&#x26D4;"},
		{status: http.StatusBadGateway, class: `<header class="warn">`, mark: "&#x26A0;&#xFE0F;", otherMark: "&#x26D4;"},
		{status: http.StatusServiceUnavailable, class: `<header class="warn">`, mark: "&#x26A0;&#xFE0F;", otherMark: "&#x26D4;"},
		{status: http.StatusGatewayTimeout, class: `<header class="warn">`, mark: "&#x26A0;&#xFE0F;", otherMark: "&#x26D4;"},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			ct, body := RenderProblem(problem(tt.status), false)
			if ct != "text/html; charset=utf-8" {
				t.Errorf("content type %q", ct)
			}
			page := string(body)
			for _, want := range []string{
				tt.class,
				`<span class="mark" aria-hidden="true">` + tt.mark + "</span>",
				"<title>接続できませんでした / Destination unreachable — sekisho</title>",
				"<h1>接続できませんでした</h1>",
				`<p class="en">Destination unreachable</p>`,
				"接続先のサーバーが応答しませんでした。",
				"The server did not answer.",
				"<code>files.example.kr</code>",
				"<code>dial tcp 203.0.113.9:443: i/o timeout</code>",
				"<strong>内線 1234</strong>",
				"<code>req-0042</code> · HTTP " + strconv.Itoa(tt.status),
			} {
				if !strings.Contains(page, want) {
					t.Errorf("page lacks %q", want)
				}
			}
			if strings.Contains(page, tt.otherMark) {
				t.Errorf("page has the other styling's mark %q", tt.otherMark)
			}
			assertNoExternal(t, page)
		})
	}
}

func TestRenderProblemHTMLEscapes(t *testing.T) {
	p := problem(http.StatusBadGateway)
	p.Host, p.Why, p.Detail, p.Helpdesk, p.RequestID = hostile, hostile, hostile, hostile, hostile
	_, body := RenderProblem(p, false)
	page := string(body)
	if strings.Contains(strings.ToLower(page), "<script") || strings.Contains(strings.ToLower(page), "<img") {
		t.Error("user text reached the problem page as markup")
	}
	// Host, reason, detail, helpdesk (ja and en), id.
	if n := strings.Count(page, escapedHostile); n != 6 {
		t.Errorf("escaped user text found %d times, want 6", n)
	}
	assertNoExternal(t, strings.ReplaceAll(page, escapedHostile, ""))
}

func TestRenderProblemHTMLOptional(t *testing.T) {
	p := problem(http.StatusBadGateway)
	p.Host, p.Why, p.Helpdesk = "", "", ""
	_, body := RenderProblem(p, false)
	page := string(body)
	if strings.Contains(page, "<dl>") {
		t.Error("destination list shown without a host")
	}
	if !strings.Contains(page, "情報システム担当") || !strings.Contains(page, "your IT helpdesk") {
		t.Error("generic helpdesk text missing")
	}

	p = problem(http.StatusBadGateway)
	p.Why = ""
	_, body = RenderProblem(p, false)
	if page := string(body); !strings.Contains(page, "<code>files.example.kr</code>") || strings.Contains(page, "理由") {
		t.Error("with a host and no reason: want the host and no reason row")
	}
}

func TestRenderProblemJSON(t *testing.T) {
	tests := []struct {
		name string
		p    *Problem
		want map[string]any
	}{
		{
			name: "full",
			p:    problem(http.StatusBadGateway),
			want: map[string]any{
				"error":      "destination_unreachable",
				"message":    "Destination unreachable: The server did not answer.",
				"message_ja": "接続できませんでした: 接続先のサーバーが応答しませんでした。",
				"request_id": "req-0042",
				"status":     float64(502),
				"host":       "files.example.kr",
				"reason":     "dial tcp 203.0.113.9:443: i/o timeout",
			},
		},
		{
			name: "403 without host and reason",
			p: func() *Problem {
				p := problem(http.StatusForbidden)
				p.Code, p.Host, p.Why = "destination_denied", "", ""
				return p
			}(),
			want: map[string]any{
				"error":      "destination_denied",
				"message":    "Destination unreachable: The server did not answer.",
				"message_ja": "接続できませんでした: 接続先のサーバーが応答しませんでした。",
				"request_id": "req-0042",
				"status":     float64(403),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct, body := RenderProblem(tt.p, true)
			if ct != "application/json; charset=utf-8" {
				t.Errorf("content type %q", ct)
			}
			assertJSON(t, body, tt.want)
		})
	}
}

func TestTemplatesRender(t *testing.T) {
	// render falls back to text/plain when a template fails; the embedded
	// ones must never.
	for _, name := range []string{"block.html", "problem.html", "onboarding.html", "selftest.html"} {
		if tmpl.Lookup(name) == nil {
			t.Errorf("template %s missing", name)
		}
	}
	if ct, body := RenderBlock(&Block{}, false); ct != "text/html; charset=utf-8" {
		t.Errorf("empty Block: %s %s", ct, body)
	}
	if ct, body := RenderProblem(&Problem{}, false); ct != "text/html; charset=utf-8" {
		t.Errorf("empty Problem: %s %s", ct, body)
	}
	if ct, body := RenderOnboarding(&Onboarding{}); ct != "text/html; charset=utf-8" {
		t.Errorf("empty Onboarding: %s %s", ct, body)
	}
	if ct, body := RenderSelftest(&Selftest{}); ct != "text/html; charset=utf-8" {
		t.Errorf("empty Selftest: %s %s", ct, body)
	}
}

// Package pages renders what a person sees when sekisho answers instead of
// the destination: the block page, and the pages for refused and failed
// requests — in Japanese and English, as HTML for browsers and JSON for API
// clients — and sekisho's own pages on the proxy port: the PAC file, the
// start page with the CA certificate and install steps, and the self-test.
// Everything is embedded: no external assets, no fonts, and no scripts but
// the self-test's own (allowed by its hash in SelftestCSP), so that the
// pages render the same on a locked-down PC.
//
// Non-goals: pages does not log or count; the proxy does.
package pages

import (
	"bytes"
	"embed"
	"encoding/json"
	"html/template"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

//go:embed templates
var files embed.FS

var tmpl = template.Must(template.ParseFS(files, "templates/*.html", "templates/style.css"))

// Block describes a blocked request for its page.
type Block struct {
	RequestID    string
	Service      string // catalog name or "other"
	ServiceTitle string // display name
	Host         string
	Country      string // effective country
	Dialed       string // country of the dialed address
	Declared     string // declared storage country, if any
	// Destination is the effective country's class: "domestic", "foreign",
	// "unknown" or "internal"; it chooses the explanation in words.
	Destination string
	Method      string
	BodyBytes   int64 // -1 when unknown
	Rule        string
	Reason      string // the rule's message
	Alternative string
	Helpdesk    string
}

// Problem describes a request sekisho could not or would not carry out for
// another reason than a rule.
type Problem struct {
	Status    int
	Code      string // machine-readable reason, such as "destination_denied"
	Title     string // English title
	TitleJA   string
	Detail    string // English explanation
	DetailJA  string
	Host      string
	Why       string // technical reason (an error message)
	RequestID string
	Helpdesk  string
}

// WantsJSON reports whether an Accept header prefers JSON to HTML: API
// clients and scripts get a machine-readable answer.
func WantsJSON(accept string) bool {
	for _, part := range strings.Split(accept, ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch {
		case mt == "application/json" || strings.HasSuffix(mt, "+json"):
			return true
		case mt == "text/html" || mt == "application/xhtml+xml":
			return false
		}
	}
	return false
}

// RenderBlock returns the content type and body of a block page.
func RenderBlock(b *Block, asJSON bool) (string, []byte) {
	if asJSON {
		v := map[string]any{
			"error":      "upload_blocked",
			"message":    "Upload blocked by sekisho: sending data to this destination is not allowed.",
			"message_ja": "sekisho によりブロックされました。この送信先へのデータ送信は許可されていません。",
			"request_id": b.RequestID,
			"service":    b.Service,
			"host":       b.Host,
			"country":    b.Country,
			"rule":       b.Rule,
		}
		if b.Reason != "" {
			v["reason"] = b.Reason
		}
		if b.Declared != "" {
			v["declared_country"] = b.Declared
			v["dialed_country"] = b.Dialed
		}
		if b.Alternative != "" {
			v["alternative"] = b.Alternative
		}
		if b.Helpdesk != "" {
			v["helpdesk"] = b.Helpdesk
		}
		return jsonBody(v)
	}
	data := struct {
		*Block
		CountryLabel string
		CountryName  string
		Size         string
		Time         string
	}{Block: b, CountryLabel: countryLabel(b.Country, b.Dialed, b.Declared), CountryName: CountryName(b.Country), Time: time.Now().Format(timeLayout)}
	if b.BodyBytes > 0 {
		data.Size = humanBytes(b.BodyBytes)
	}
	return render("block.html", data)
}

// RenderProblem returns the content type and body of a problem page.
func RenderProblem(p *Problem, asJSON bool) (string, []byte) {
	if asJSON {
		v := map[string]any{
			"error":      p.Code,
			"message":    p.Title + ": " + p.Detail,
			"message_ja": p.TitleJA + ": " + p.DetailJA,
			"request_id": p.RequestID,
			"status":     p.Status,
		}
		if p.Host != "" {
			v["host"] = p.Host
		}
		if p.Why != "" {
			v["reason"] = p.Why
		}
		return jsonBody(v)
	}
	data := struct {
		*Problem
		Class, Time string
		Mark        template.HTML
	}{Problem: p, Class: "warn", Mark: "&#x26A0;&#xFE0F;", Time: time.Now().Format(timeLayout)}
	if p.Status == http.StatusForbidden {
		data.Class, data.Mark = "block", "&#x26D4;"
	}
	return render("problem.html", data)
}

// timeLayout is how pages show the time: what a person reads out to a
// helpdesk, with the offset so that logs in UTC can be matched.
const timeLayout = "2006-01-02 15:04:05 -07:00"

func render(name string, data any) (string, []byte) {
	var buf bytes.Buffer
	if err := tmpl.ExecuteTemplate(&buf, name, data); err != nil {
		// The templates are embedded and tested; this is a build bug.
		return "text/plain; charset=utf-8", []byte("sekisho: cannot render page: " + err.Error() + "\n")
	}
	return "text/html; charset=utf-8", buf.Bytes()
}

func jsonBody(v any) (string, []byte) {
	b, _ := json.MarshalIndent(v, "", "  ")
	return "application/json; charset=utf-8", append(b, '\n')
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return strconv.FormatFloat(float64(n)/(1<<30), 'f', 1, 64) + " GiB"
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	}
	return strconv.FormatInt(n, 10) + " bytes"
}

// countryLabel names the effective country, and says when it comes from a
// declared storage country rather than the address dialed.
func countryLabel(effective, dialed, declared string) string {
	s := CountryName(effective)
	if declared != "" && declared == effective && dialed != declared {
		s += " — 保存先として登録された国 / declared storage country (接続先 connected to: " + CountryName(dialed) + ")"
	}
	return s
}

// CountryName gives "KR 韓国 / South Korea" for the countries a Japanese
// office meets most; other codes are shown as they are.
func CountryName(code string) string {
	switch code {
	case "internal":
		return "組織内ネットワーク / internal network"
	case "unknown", "":
		return "不明 / unknown (treated as foreign)"
	}
	if n, ok := countryNames[code]; ok {
		return code + " " + n
	}
	return code
}

var countryNames = map[string]string{
	"JP": "日本 / Japan", "KR": "韓国 / South Korea", "KP": "北朝鮮 / North Korea", "CN": "中国 / China",
	"TW": "台湾 / Taiwan", "HK": "香港 / Hong Kong", "MO": "マカオ / Macao", "MN": "モンゴル / Mongolia",
	"US": "アメリカ合衆国 / United States", "CA": "カナダ / Canada", "MX": "メキシコ / Mexico", "BR": "ブラジル / Brazil",
	"GB": "イギリス / United Kingdom", "IE": "アイルランド / Ireland", "DE": "ドイツ / Germany", "FR": "フランス / France",
	"NL": "オランダ / Netherlands", "BE": "ベルギー / Belgium", "LU": "ルクセンブルク / Luxembourg", "CH": "スイス / Switzerland",
	"AT": "オーストリア / Austria", "IT": "イタリア / Italy", "ES": "スペイン / Spain", "PT": "ポルトガル / Portugal",
	"SE": "スウェーデン / Sweden", "NO": "ノルウェー / Norway", "FI": "フィンランド / Finland", "DK": "デンマーク / Denmark",
	"PL": "ポーランド / Poland", "CZ": "チェコ / Czechia", "RU": "ロシア / Russia", "UA": "ウクライナ / Ukraine",
	"TR": "トルコ / Türkiye", "IL": "イスラエル / Israel", "AE": "アラブ首長国連邦 / United Arab Emirates", "SA": "サウジアラビア / Saudi Arabia",
	"IN": "インド / India", "SG": "シンガポール / Singapore", "MY": "マレーシア / Malaysia", "TH": "タイ / Thailand",
	"VN": "ベトナム / Viet Nam", "PH": "フィリピン / Philippines", "ID": "インドネシア / Indonesia", "AU": "オーストラリア / Australia",
	"NZ": "ニュージーランド / New Zealand", "ZA": "南アフリカ / South Africa", "IS": "アイスランド / Iceland", "EE": "エストニア / Estonia",
}

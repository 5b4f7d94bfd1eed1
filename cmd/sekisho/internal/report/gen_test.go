package report

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/sekisho/sekisho/proxy/audit"
)

// The generated log: a few thousand lines as the proxy writes them (through
// audit.Logger), covering every action, mode, country, client group,
// would-block, budget exceeded, refusals, sekisho's own pages, intercepted
// sessions, unknown fields, and malformed lines. The generator keeps its
// own account of what it wrote, so that tests can check the report against
// it and not only against a golden file.

type genService struct {
	name     string
	host     string
	declared string // storage country the catalog declares
	dialed   []string
}

var genServices = []genService{
	{"line", "obs.line-scdn.net", "KR", []string{"JP", "JP", "JP", "KR"}},
	{"slack", "files.slack.com", "", []string{"US"}},
	{"google-drive", "drive.google.com", "", []string{"US", "JP"}},
	{"dropbox", "content.dropboxapi.com", "", []string{"US"}},
	{"wechat", "file.wx.qq.com", "CN", []string{"CN"}},
	{"city-chat", "chat.city.example.lg.jp", "", []string{"internal", "JP"}},
	{"other", "files.example.net", "", []string{"JP", "KR", "CN", "US", "unknown", "internal"}},
}

var genGroups = []string{"welfare", "tax", "citizens", "other"}

var genTitles = struct{ groups, services map[string]string }{
	groups:   map[string]string{"welfare": "福祉課", "tax": "税務課", "citizens": "市民課"},
	services: map[string]string{"line": "LINE", "google-drive": "Google ドライブ", "city-chat": "庁内チャット", "wechat": "WeChat"},
}

// genStart is the first line's time: a Monday morning in Japan.
var genStart = time.Date(2026, 6, 1, 8, 0, 0, 0, time.FixedZone("JST", 9*3600))

// expected is the generator's own account of what a report must show.
type expected struct {
	rows       map[rowKey]*Counts
	notProxied map[string]int64
	sessions   int64
	malformed  []int // line numbers
	lines      int64 // non-blank lines
	first      time.Time
	last       time.Time
}

func destOf(country string) string {
	switch country {
	case "JP":
		return "domestic"
	case "internal", "unknown":
		return country
	}
	return "foreign"
}

// strictest is the effective country: the declared storage country wins
// over a domestic or internal dialed country.
func strictest(dialed, declared string) string {
	if declared == "" {
		return dialed
	}
	rank := func(c string) int {
		switch destOf(c) {
		case "internal":
			return 0
		case "domestic":
			return 1
		}
		return 2
	}
	if rank(declared) >= rank(dialed) {
		return declared
	}
	return dialed
}

// generate writes n records (plus refusals, sessions and malformed lines
// mixed in) and returns the log and the account of it.
func generate(n int, seed uint64) ([]byte, *expected) {
	rng := rand.New(rand.NewPCG(seed, 0x5e15))
	exp := &expected{rows: map[rowKey]*Counts{}, notProxied: map[string]int64{}}
	var out bytes.Buffer
	var one bytes.Buffer
	logger := audit.New(&one)
	lineNo := 0
	at := genStart
	emit := func(r *audit.Record, extra string) {
		one.Reset()
		logger.Log(r)
		line := one.Bytes()
		// The logger stamps the time of writing; the golden files need
		// fixed times, so the "time" value (always first) is replaced.
		i := bytes.Index(line, []byte(`","level"`))
		fixed := append([]byte(`{"time":"`+at.Format("2006-01-02T15:04:05.000Z07:00")), line[i:]...)
		if extra != "" {
			fixed = append(fixed[:len(fixed)-2], []byte(","+extra+"}\n")...)
		}
		out.Write(fixed)
		lineNo++
		exp.lines++
		if exp.first.IsZero() {
			exp.first = at
		}
		exp.last = at
	}
	malformed := func(s string) {
		out.WriteString(s + "\n")
		lineNo++
		exp.lines++
		exp.malformed = append(exp.malformed, lineNo)
	}
	modes := []string{"http", "http", "http", "tunnel", "websocket", "inspected", "inspected"}
	for i := range n {
		at = at.Add(time.Duration(60+rng.IntN(120)) * time.Second)
		switch {
		case i%97 == 13:
			malformed([]string{
				`{"time":"2026-06-01T09:00:00.000+09:00","kind":"request","upload_bytes":12`, // cut off
				`not json at all`,
				`{"level":"INFO","msg":"request","kind":"request"}`, // no time
				`{"time":"2026-06-01T09:00:00.000+09:00","kind":"request","port":"443"}`,
			}[i%4])
			continue
		case i%89 == 7:
			out.WriteString("\n") // blank lines are skipped, not counted
			lineNo++
			continue
		case i%61 == 5:
			reason := []string{"client_not_allowed", "bad_request", "destination_denied", "ambiguous_framing"}[i%4]
			emit(&audit.Record{ID: fmt.Sprint("r", i), Kind: audit.KindRequest, Client: "192.0.2.7:4000", Method: "POST",
				Host: "evil.example", Status: []int{403, 400, 403, 400}[i%4], Reason: reason, ClientGroup: "other"}, "")
			exp.notProxied[reason]++
			continue
		case i%71 == 3:
			emit(&audit.Record{ID: fmt.Sprint("p", i), Kind: audit.KindRequest, Client: "10.1.0.9:5000", Method: "GET",
				Path: "/proxy.pac", Status: 200, ClientGroup: "welfare"}, "")
			exp.notProxied["sekisho_page"]++
			continue
		}
		svc := genServices[rng.IntN(len(genServices))]
		group := genGroups[rng.IntN(len(genGroups))]
		country := svc.dialed[rng.IntN(len(svc.dialed))]
		effective := strictest(country, svc.declared)
		dest := destOf(effective)
		mode := modes[rng.IntN(len(modes))]
		r := &audit.Record{
			ID: fmt.Sprintf("01JX%06d", i), Kind: audit.KindRequest, Client: fmt.Sprintf("10.%d.0.%d:%d", 1+rng.IntN(3), 1+rng.IntN(200), 40000+i),
			ClientGroup: group, Host: svc.host, Port: 443, Scheme: "https", Addr: "192.0.2.1:443",
			Country: country, Declared: svc.declared, Effective: effective, Destination: dest,
			Service: svc.name, Mode: mode, Duration: time.Duration(rng.IntN(900000)) * time.Microsecond, RulesHash: "0123456789ab",
		}
		if country == "internal" {
			r.Addr = "10.9.0.1:443"
		}
		upload := rng.IntN(3) == 0
		switch mode {
		case "tunnel":
			if rng.IntN(9) == 0 {
				// The session line of an intercepted CONNECT.
				r.Kind, r.Mode, r.Method = audit.KindTunnel, "inspected", "CONNECT"
				r.Action, r.Rule, r.Stream, r.Budget, r.Status = "allow", "default", true, -1, 200
				r.Inspection = "default"
				emit(r, "")
				exp.sessions++
				continue
			}
			r.Kind, r.Method, r.Stream, r.Status = audit.KindTunnel, "CONNECT", true, 200
			r.Budget = -1
			if dest != "domestic" && dest != "internal" {
				r.Budget = 1 << 20
			}
		case "websocket":
			r.Method, r.Path, r.Stream, r.Status, r.Scheme = "GET", "/ws", true, 101, "http"
			r.Budget = -1
			if dest != "domestic" && dest != "internal" {
				r.Budget = 1 << 20
			}
		default:
			r.Method, r.Path, r.Status = "GET", "/files/"+fmt.Sprint(i), 200
			if upload {
				r.Method = []string{"POST", "PUT"}[rng.IntN(2)]
				r.BodyBytes = int64(1 + rng.IntN(3<<20))
				r.ContentType = "multipart/form-data"
				r.FileParts = "yes"
				r.PartTypes = []string{"image/jpeg"}
				if rng.IntN(5) == 0 {
					r.BodyBytes, r.BodyBytesMin, r.PartsIncomplete = -1, 65537, true
				}
			}
		}
		// The decision.
		foreign := dest == "foreign" || dest == "unknown"
		reportOnly := at.Weekday() == time.Wednesday // report-only on Wednesdays
		switch {
		case upload && !r.Stream && foreign:
			r.Action, r.Rule = "block", "block-foreign-uploads"
			if svc.name == "line" {
				r.Rule = "no-line-uploads"
			}
			if reportOnly {
				r.WouldBlock = true
			} else {
				r.Status = 403
			}
		case upload && !r.Stream && r.BodyBytes > 2<<20:
			r.Action, r.Rule = "log", "log-big-domestic-uploads"
		default:
			r.Action, r.Rule = "allow", "default"
		}
		if r.Action != "block" || r.WouldBlock {
			r.DownloadBytes = int64(rng.IntN(200000))
			if upload && !r.Stream {
				if r.BodyBytes > 0 {
					r.UploadBytes = r.BodyBytes
				} else {
					r.UploadBytes = int64(65537 + rng.IntN(1<<20))
				}
			} else if r.Stream {
				r.UploadBytes = int64(500 + rng.IntN(4000))
				if upload && r.Budget > 0 {
					// Pushed more than the budget: cut, or over in report-only.
					r.BudgetExceeded = true
					r.Reason = "upload_budget_exceeded"
					r.UploadBytes = r.Budget
					if reportOnly {
						r.UploadBytes = r.Budget + int64(rng.IntN(1<<20))
					}
				}
			}
		}
		extra := ""
		if i%53 == 0 {
			extra = `"siem":{"ingest":"2026-06-01","tags":["a","b"]},"score":0.5`
		}
		emit(r, extra)

		k := rowKey{group, svc.name, effective, dest}
		c := exp.rows[k]
		if c == nil {
			c = &Counts{}
			exp.rows[k] = c
		}
		c.Requests++
		if r.UploadBytes > 0 && !r.Stream {
			c.Uploads++
		}
		c.UploadBytes += r.UploadBytes
		c.DownloadBytes += r.DownloadBytes
		if r.Action == "block" && !r.WouldBlock {
			c.Blocked++
		}
		if r.WouldBlock {
			c.WouldBlock++
		}
		if r.BudgetExceeded {
			c.OverBudget++
		}
	}
	return out.Bytes(), exp
}

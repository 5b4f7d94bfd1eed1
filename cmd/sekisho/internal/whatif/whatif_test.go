package whatif

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/proxy/audit"
	"github.com/sekisho/sekisho/rules"
)

var update = flag.Bool("update", false, "rewrite testdata/audit.jsonl from the recipe")

// recipe is the fixture log: kinds of request, how many of each, and what
// new.yaml must do to them compared with old.yaml (which decided them).
//
//	A 10 tax POST to Slack (US)              block → allow     allow-slack-tax
//	B  7 welfare POST to Slack (US)          block, unchanged
//	C  5 welfare GET LINE media (JP→KR)      allow → block     block-welfare-line
//	D  4 welfare POST LINE media             block → block, another rule (rule only)
//	E  6 tax POST 20MiB to jp.example        allow → log       log-big-domestic-uploads
//	F  3 tax POST 1MiB to jp.example         allow, unchanged
//	G  8 CONNECT to US, 512KiB sent          allow → cut       budget 1MiB → 256KiB
//	H  2 CONNECT to US, cut at 1MiB          cut, unchanged (256KiB ≤ 1MiB)
//	I  3 CONNECT to US, 100KiB sent          allow, unchanged
//	J  2 POST to city-chat (internal)        allow, unchanged
//	K  4 chunked POST to US, held            block, unchanged
//	N  3 WebSocket to US, 600KiB sent        allow → cut
//	O  2 welfare POST multipart to jp.example, file parts not looked at
//	                                         allow → block (uncertain: fail closed)
//	P  2 websocket inside an intercepted tunnel (mode inspected, stream) 600KiB → cut
//	R  3 refusals (no decision), 2 malformed lines
type recipe struct {
	name      string
	n         int
	client    string
	method    string
	target    string // URL, or host:port for CONNECT
	country   string
	mode      string
	body      int64 // -1: chunked
	seen      int64 // for chunked: what the proxy saw before deciding
	ctype     string
	fileParts string
	sent      int64 // stream upload
}

var recipes = []recipe{
	{name: "A", n: 10, client: "10.2.0.5", method: "POST", target: "https://files.slack.com/upload", country: "US", body: 1 << 20, ctype: "multipart/form-data", fileParts: "yes"},
	{name: "B", n: 7, client: "10.1.0.5", method: "POST", target: "https://files.slack.com/upload", country: "US", body: 1 << 20, ctype: "multipart/form-data", fileParts: "yes"},
	{name: "C", n: 5, client: "10.1.3.9", method: "GET", target: "https://obs.line-scdn.net/r/talk/1", country: "JP"},
	{name: "D", n: 4, client: "10.1.3.9", method: "POST", target: "https://obs.line-scdn.net/r/talk/m/1", country: "JP", body: 2 << 20, ctype: "image/jpeg"},
	{name: "E", n: 6, client: "10.2.0.7", method: "POST", target: "http://jp.example/archive", country: "JP", body: 20 << 20, ctype: "application/octet-stream"},
	{name: "F", n: 3, client: "10.2.0.7", method: "POST", target: "http://jp.example/archive", country: "JP", body: 1 << 20, ctype: "application/octet-stream"},
	{name: "G", n: 8, client: "10.1.0.8", method: "CONNECT", target: "us.example:443", country: "US", mode: "tunnel", sent: 512 << 10},
	{name: "H", n: 2, client: "10.1.0.8", method: "CONNECT", target: "us.example:443", country: "US", mode: "tunnel", sent: 5 << 20},
	{name: "I", n: 3, client: "10.2.0.8", method: "CONNECT", target: "us.example:443", country: "US", mode: "tunnel", sent: 100 << 10},
	{name: "J", n: 2, client: "10.1.0.9", method: "POST", target: "https://chat.city.example.lg.jp/post", country: "internal", body: 5 << 10, ctype: "application/json"},
	{name: "K", n: 4, client: "10.2.0.9", method: "POST", target: "http://us.example/up", country: "US", body: -1, seen: 65537, ctype: "multipart/form-data", fileParts: "unknown"},
	{name: "N", n: 3, client: "10.1.0.10", method: "GET", target: "http://us.example/ws", country: "US", mode: "websocket", sent: 600 << 10},
	{name: "O", n: 2, client: "10.1.0.11", method: "POST", target: "http://jp.example/form", country: "JP", body: 1 << 20, ctype: "multipart/form-data", fileParts: "unknown"},
	{name: "P", n: 2, client: "10.2.0.12", method: "GET", target: "https://us.example/ws", country: "US", mode: "inspected-ws", sent: 600 << 10},
}

func loadSet(t testing.TB, name string) *rules.Set {
	t.Helper()
	set, err := rules.Load(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// writeFixture decides every recipe request with old.yaml the way the
// proxy does and logs it the way proxy/handler.go's finish does.
func writeFixture(t *testing.T, set *rules.Set) []byte {
	var out bytes.Buffer
	var one bytes.Buffer
	logger := audit.New(&one)
	at := time.Date(2026, 6, 15, 9, 0, 0, 0, time.FixedZone("", 9*3600))
	id := 0
	emit := func(r *audit.Record) {
		one.Reset()
		logger.Log(r)
		line := one.Bytes()
		i := bytes.Index(line, []byte(`","level"`))
		out.WriteString(`{"time":"` + at.Format("2006-01-02T15:04:05.000Z07:00"))
		out.Write(line[i:])
		at = at.Add(37 * time.Second)
	}
	for _, rc := range recipes {
		for i := range rc.n {
			id++
			f := rules.Facts{Client: netip.MustParseAddr(rc.client), Method: rc.method, Country: rc.country, Final: true}
			r := &audit.Record{ID: fmt.Sprintf("req-%s-%02d", rc.name, i), Kind: audit.KindRequest, Client: fmt.Sprintf("%s:%d", rc.client, 50000+id), Method: rc.method}
			switch {
			case rc.method == "CONNECT":
				host, port, _ := rules.SplitHostPort(rc.target, 0)
				f.Host, f.Port, f.Stream = host, port, true
				r.Kind, r.Mode = audit.KindTunnel, "tunnel"
			default:
				scheme, rest, _ := strings.Cut(rc.target, "://")
				hostport, path, _ := strings.Cut(rest, "/")
				def := uint16(80)
				if scheme == "https" {
					def = 443
				}
				host, port, _ := rules.SplitHostPort(hostport, def)
				f.Host, f.Port, f.Path = host, port, rules.CleanPath("/"+path)
				r.Scheme, r.Mode = scheme, "http"
				if scheme == "https" {
					r.Mode = "inspected"
				}
				switch rc.mode {
				case "websocket":
					f.Stream, r.Mode = true, "websocket"
				case "inspected-ws":
					f.Stream, r.Mode = true, "inspected"
				}
			}
			if f.Stream {
				f.Body = rules.Body{SizeExact: true, FileParts: rules.TriNo, PartsComplete: true}
			} else {
				b := &f.Body
				switch {
				case rc.body > 0:
					b.Present, b.Size, b.SizeExact = true, rc.body, true
				case rc.body < 0:
					b.Present, b.Size = true, rc.seen
				default:
					b.SizeExact = true
				}
				b.ContentType = rc.ctype
				switch rc.fileParts {
				case "yes":
					b.FileParts, b.PartsComplete = rules.TriYes, true
				case "unknown":
				default:
					b.FileParts, b.PartsComplete = rules.TriNo, true
				}
			}
			f.Addr = map[string]netip.Addr{"US": netip.MustParseAddr("192.0.2.4"), "JP": netip.MustParseAddr("192.0.2.1"), "internal": netip.MustParseAddr("10.9.0.1")}[rc.country]
			set.Prepare(&f)
			d := set.Decide(&f)
			// As finish() fills the record.
			r.Host, r.Port, r.Path = f.Host, f.Port, f.Path
			r.Addr = netip.AddrPortFrom(f.Addr, f.Port).String()
			r.ClientGroup, r.Country, r.Declared, r.Effective = f.GroupName(), f.Country, f.Declared, f.Effective
			r.Destination, r.Service = f.Destination.String(), f.ServiceName()
			if f.Endpoint != nil {
				r.Endpoint = f.Endpoint.Name
			}
			r.Rule, r.Action, r.WouldBlock, r.FailClosed = d.RuleName(), d.Action.String(), d.WouldBlock(), d.FailClosed
			r.Stream = f.Stream
			if f.Stream {
				r.Budget = d.Budget
				r.UploadBytes = rc.sent
				if d.Budget >= 0 && rc.sent > d.Budget {
					r.BudgetExceeded, r.UploadBytes, r.Reason = true, d.Budget, "upload_budget_exceeded"
				}
				r.Status = 200
			} else {
				r.BodyBytes = -1
				if f.Body.SizeExact {
					r.BodyBytes = f.Body.Size
				} else {
					r.BodyBytesMin = f.Body.Size
				}
				r.ContentType, r.Encoded = f.Body.ContentType, f.Body.Encoded
				if f.Body.Present {
					r.FileParts = map[rules.Tri]string{rules.TriYes: "yes", rules.TriNo: "no", rules.TriUnknown: "unknown"}[f.Body.FileParts]
					r.PartsIncomplete = !f.Body.PartsComplete
				}
				r.Status = 200
				if d.Blocks() {
					r.Status = 403
				} else {
					r.UploadBytes = max(rc.body, 0)
				}
			}
			r.DownloadBytes = 1234
			emit(r)
		}
	}
	for i, reason := range []string{"client_not_allowed", "bad_request", "destination_denied"} {
		emit(&audit.Record{ID: fmt.Sprint("refused-", i), Kind: audit.KindRequest, Client: "192.0.2.9:1", Status: 403, Reason: reason})
	}
	out.WriteString("{\"time\":\"2026-06-15T10:00:00+09:00\",\"kind\":\n")
	out.WriteString("garbage\n")
	return out.Bytes()
}

func fixture(t *testing.T) []byte {
	t.Helper()
	path := filepath.Join("testdata", "audit.jsonl")
	if *update {
		data := writeFixture(t, loadSet(t, "old.yaml"))
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func replay(t *testing.T, opt Options) *Result {
	t.Helper()
	p := New(opt)
	if err := p.Read("audit.jsonl", bytes.NewReader(fixture(t))); err != nil {
		t.Fatal(err)
	}
	return p.Result()
}

func TestUnchangedRules(t *testing.T) {
	r := replay(t, Options{Rules: loadSet(t, "old.yaml")})
	if r.Changed != 0 || r.RuleOnlyCount != 0 {
		t.Errorf("the rules that wrote the log change %d outcomes and %d rules:\n%+v", r.Changed, r.RuleOnlyCount, r.Changes)
	}
	total := 0
	for _, rc := range recipes {
		total += rc.n
	}
	want := Lines{Read: int64(total) + 3 + 2, Replayed: int64(total), NoDecision: 3, Malformed: 2}
	if r.Lines != want {
		t.Errorf("lines %+v, want %+v", r.Lines, want)
	}
}

// TestKnownChange: new.yaml flips exactly the requests the recipe says.
func TestKnownChange(t *testing.T) {
	for _, baseline := range []bool{false, true} {
		t.Run(fmt.Sprintf("baseline=%v", baseline), func(t *testing.T) {
			opt := Options{Rules: loadSet(t, "new.yaml")}
			if baseline {
				opt.Baseline = loadSet(t, "old.yaml")
			}
			r := replay(t, opt)
			trans := map[string]int64{}
			for _, tr := range r.Transitions {
				trans[tr.From.String()+"→"+tr.To.String()] = tr.Count
			}
			wantTrans := map[string]int64{"block→allow": 10, "allow→block": 5 + 2, "allow→log": 6, "allow→cut": 8 + 3 + 2}
			if !reflect.DeepEqual(trans, wantTrans) {
				t.Errorf("transitions %v, want %v", trans, wantTrans)
			}
			if r.Changed != 36 || r.Uncertain != 2 || r.RuleOnlyCount != 4 {
				t.Errorf("changed %d, uncertain %d, rule-only %d; want 36, 2, 4", r.Changed, r.Uncertain, r.RuleOnlyCount)
			}
			type key struct{ from, to, fromRule, toRule, svc, grp string }
			got := map[key]int64{}
			for _, g := range r.Changes {
				got[key{g.From.String(), g.To.String(), g.FromRule, g.ToRule, g.Service, g.ClientGroup}] = g.Count
				if len(g.Examples) == 0 || len(g.Examples) > 3 {
					t.Errorf("group %+v has %d examples, want 1 to 3", g, len(g.Examples))
				}
			}
			want := map[key]int64{
				{"block", "allow", "block-foreign-uploads", "allow-slack-tax", "slack", "tax"}: 10,
				{"allow", "block", "default", "block-welfare-line", "line", "welfare"}:         5,
				{"allow", "block", "default", "block-files-jp", "other", "welfare"}:            2,
				{"allow", "log", "default", "log-big-domestic-uploads", "other", "tax"}:        6,
				{"allow", "cut", "default", "default", "other", "welfare"}:                     8 + 3,
				{"allow", "cut", "default", "default", "other", "tax"}:                         2,
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("groups:\n got %v\nwant %v", got, want)
			}
			if len(r.RuleOnly) != 1 || r.RuleOnly[0].FromRule != "block-foreign-uploads" || r.RuleOnly[0].ToRule != "block-welfare-line" {
				t.Errorf("rule-only %+v, want LINE uploads now blocked by block-welfare-line", r.RuleOnly)
			}
			for _, g := range r.Changes {
				if g.ToRule == "block-files-jp" && (g.Uncertain != 2 || !strings.Contains(g.Examples[0].Note, "fail closed")) {
					t.Errorf("the file-parts rule's blocks are not marked uncertain: %+v", g)
				}
			}
		})
	}
}

func TestExamples(t *testing.T) {
	r := replay(t, Options{Rules: loadSet(t, "new.yaml"), Examples: 2})
	var slack *Group
	for i := range r.Changes {
		if r.Changes[i].ToRule == "allow-slack-tax" {
			slack = &r.Changes[i]
		}
	}
	if slack == nil || len(slack.Examples) != 2 {
		t.Fatalf("slack group %+v, want 2 examples", slack)
	}
	x := slack.Examples[0]
	want := Example{File: "audit.jsonl", Line: 1, ID: "req-A-00", Client: "10.2.0.5:50001", Request: "POST https://files.slack.com/upload",
		Country: "US", Body: "1MiB multipart/form-data, file parts yes", FromRule: "block-foreign-uploads", ToRule: "allow-slack-tax"}
	x.Time = time.Time{}
	if x != want {
		t.Errorf("example\n got %+v\nwant %+v", x, want)
	}
	var buf bytes.Buffer
	if err := WriteText(&buf, r, false); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, s := range []string{"CHANGES   36 of 61 requests", "Would now be STOPPED", "Would now GO THROUGH", "block-welfare-line",
		"audit.jsonl:1  id req-A-00", "POST https://files.slack.com/upload  [US]", "note: fail closed", "Same outcome, another rule: 4",
		"malformed audit.jsonl:65"} {
		if !strings.Contains(out, s) {
			t.Errorf("text output lacks %q:\n%s", s, out)
		}
	}
	buf.Reset()
	if err := WriteJSON(&buf, r); err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Changed != r.Changed || len(back.Changes) != len(r.Changes) || back.Changes[0].To != r.Changes[0].To {
		t.Error("the JSON does not read back to the same result")
	}
}

func TestFacts(t *testing.T) {
	tests := []struct {
		name string
		line string
		want func(f *rules.Facts) string
	}{
		{"client, addr, stream of a tunnel",
			`{"time":"2026-06-15T09:00:00Z","kind":"tunnel","client":"[::ffff:10.1.2.3]:5000","method":"CONNECT","host":"a.example","port":443,"addr":"[2001:db8::1]:443","country":"US","action":"allow","mode":"tunnel","budget":1048576}`,
			func(f *rules.Facts) string {
				if f.Client != netip.MustParseAddr("10.1.2.3") || f.Addr != netip.MustParseAddr("2001:db8::1") || !f.Stream || f.Path != "" {
					return fmt.Sprintf("%+v", f)
				}
				return ""
			}},
		{"websocket inside an intercepted tunnel is a stream",
			`{"time":"2026-06-15T09:00:00Z","kind":"request","client":"10.1.2.3:5","method":"GET","host":"a.example","path":"/ws","action":"allow","mode":"inspected","stream":true}`,
			func(f *rules.Facts) string {
				if !f.Stream || f.Path != "/ws" {
					return fmt.Sprintf("%+v", f)
				}
				return ""
			}},
		{"chunked body sent in full: what the proxy would have seen",
			`{"time":"2026-06-15T09:00:00Z","kind":"request","method":"POST","host":"a.example","action":"allow","mode":"http","body_bytes":-1,"upload_bytes":5000,"status":200}`,
			func(f *rules.Facts) string {
				if b := f.Body; !b.Present || b.Size != 5000 || !b.SizeExact {
					return fmt.Sprintf("%+v", b)
				}
				return ""
			}},
		{"chunked body beyond the hold limit",
			`{"time":"2026-06-15T09:00:00Z","kind":"request","method":"POST","host":"a.example","action":"allow","mode":"http","body_bytes":-1,"upload_bytes":900000,"status":200}`,
			func(f *rules.Facts) string {
				if b := f.Body; !b.Present || b.Size != 65537 || b.SizeExact {
					return fmt.Sprintf("%+v", b)
				}
				return ""
			}},
		{"chunked body broken off: upload_bytes is not its size",
			`{"time":"2026-06-15T09:00:00Z","kind":"request","method":"POST","host":"a.example","action":"allow","mode":"http","body_bytes":-1,"upload_bytes":5000,"status":502,"error":"client went away"}`,
			func(f *rules.Facts) string {
				if b := f.Body; !b.Present || b.Size != 0 || b.SizeExact {
					return fmt.Sprintf("%+v", b)
				}
				return ""
			}},
		{"chunked body that was blocked: only what was seen",
			`{"time":"2026-06-15T09:00:00Z","kind":"request","method":"POST","host":"a.example","action":"block","mode":"http","body_bytes":-1,"body_bytes_min":70000,"status":403}`,
			func(f *rules.Facts) string {
				if b := f.Body; !b.Present || b.Size != 70000 || b.SizeExact {
					return fmt.Sprintf("%+v", b)
				}
				return ""
			}},
		{"multipart with incomplete parts, encoded",
			`{"time":"2026-06-15T09:00:00Z","kind":"request","method":"POST","host":"a.example","action":"allow","mode":"http","body_bytes":10,"content_type":"multipart/form-data","file_parts":"yes","part_types":["image/png"],"parts_incomplete":true,"body_encoded":true}`,
			func(f *rules.Facts) string {
				if b := f.Body; b.FileParts != rules.TriYes || b.PartsComplete || !b.Encoded || len(b.PartTypes) != 1 || b.ContentType != "multipart/form-data" {
					return fmt.Sprintf("%+v", b)
				}
				return ""
			}},
		{"no body",
			`{"time":"2026-06-15T09:00:00Z","kind":"request","method":"GET","host":"a.example","path":"/","action":"allow","mode":"http"}`,
			func(f *rules.Facts) string {
				if b := f.Body; b.Present || !b.SizeExact || b.FileParts != rules.TriNo || !b.PartsComplete {
					return fmt.Sprintf("%+v", b)
				}
				return ""
			}},
	}
	d := audit.NewDecoder()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e audit.Entry
			if err := d.Decode([]byte(tt.line), &e); err != nil {
				t.Fatal(err)
			}
			f := Facts(&e, DefaultHoldBodyBytes)
			if !f.Final {
				t.Error("not Final")
			}
			if msg := tt.want(&f); msg != "" {
				t.Errorf("facts: %s", msg)
			}
		})
	}
}

// BenchmarkReplay measures whatif on the fixture, repeated.
func BenchmarkReplay(b *testing.B) {
	data, err := os.ReadFile(filepath.Join("testdata", "audit.jsonl"))
	if err != nil {
		b.Fatal(err)
	}
	data = bytes.Repeat(data, 200)
	set := loadSet(b, "new.yaml")
	lines := bytes.Count(data, []byte{'\n'})
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		p := New(Options{Rules: set})
		if err := p.Read("bench", bytes.NewReader(data)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(lines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}

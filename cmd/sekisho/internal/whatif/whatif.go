// Package whatif replays logged requests through a new rule set and tells
// what would change: which requests would now be blocked, which would now
// go through, by which rule, for which service and department — before the
// new rules are reloaded into the proxy that the whole city hall uses.
//
// A rules change is the riskiest thing an admin does to sekisho: too
// strict, and the welfare department cannot send a form; too loose, and a
// resident's file goes abroad. The audit log holds every fact a rule can
// match on (see proxy/audit), so past traffic is the test set: each line
// is turned back into rules.Facts, decided by the new set with Final set
// (the proxy's last word), and compared with what was logged — or, with a
// baseline set, with what the rules in force decide on the same facts,
// which isolates the change from reloads during the logged period.
//
// Non-goals: it does not resolve or geolocate again (the country logged is
// the country dialed), and it cannot see request bodies: a new rule that
// needs body facts the log lacks (file parts of a body the proxy did not
// look into) decides as the proxy would without them — fail closed — and
// such changes are marked uncertain.
package whatif

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sort"
	"time"

	"github.com/sekisho/sekisho/proxy/audit"
	"github.com/sekisho/sekisho/rules"
)

// Outcome is what happened to a request, as the person who sent it saw
// it. Changes are counted between outcomes, not actions: a rule renamed
// is not a change for the city hall.
type Outcome uint8

const (
	// Allow: let through.
	Allow Outcome = iota
	// Log: let through and recorded as notable.
	Log
	// WouldBlock: let through because the rules are in report-only mode,
	// where a block rule matched (or a tunnel went over its budget).
	WouldBlock
	// Block: stopped by a block rule, nothing of the body sent.
	Block
	// Cut: a tunnel or WebSocket closed when it went over its upload
	// budget.
	Cut
	// Inspected: a CONNECT whose TLS is opened; each request inside is
	// decided on its own (and on its own line of the log). A change to or
	// from it is a change of the rules' inspection section (or bypass
	// list): what the requests inside get then changes too.
	Inspected
)

var outcomeNames = [...]string{Allow: "allow", Log: "log", WouldBlock: "would-block", Block: "block", Cut: "cut", Inspected: "inspected"}

// String names the outcome as the text and JSON outputs write it.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "invalid"
}

// MarshalText writes the outcome's name (for JSON).
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// UnmarshalText reads an outcome's name.
func (o *Outcome) UnmarshalText(b []byte) error {
	for i, n := range outcomeNames {
		if n == string(b) {
			*o = Outcome(i)
			return nil
		}
	}
	return fmt.Errorf("unknown outcome %q", b)
}

// Stops reports whether the outcome stopped the upload.
func (o Outcome) Stops() bool { return o == Block || o == Cut }

// DefaultHoldBodyBytes is the proxy's default limits.hold_body_bytes.
const DefaultHoldBodyBytes = 64 << 10

// Options configure a replay.
type Options struct {
	// Rules is the new rule set to try.
	Rules *rules.Set
	// Baseline, when set, is the rule set to compare with (the rules in
	// force), decided on the same facts. Nil compares with the decisions
	// logged.
	Baseline *rules.Set
	// HoldBodyBytes is the proxy's limits.hold_body_bytes: how much of a
	// body without a length the proxy would look at before deciding. 0
	// means the default (64 KiB).
	HoldBodyBytes int64
	// Examples is how many example requests are kept per group; 0 means 3.
	Examples int
	// Since and Until bound the replayed period like `sekisho report`'s.
	Since, Until time.Time
}

// Example is one request of a group, with enough to find it in the log
// (file, line, request id) and to recognise it.
type Example struct {
	File     string    `json:"file"`
	Line     int       `json:"line"`
	Time     time.Time `json:"time"`
	ID       string    `json:"id,omitempty"`
	Client   string    `json:"client,omitempty"`
	Request  string    `json:"request"` // "POST https://host/path" or "CONNECT host:443"
	Country  string    `json:"country"` // dialed → effective under the new rules
	Body     string    `json:"body,omitempty"`
	FromRule string    `json:"from_rule"`
	ToRule   string    `json:"to_rule"`
	Note     string    `json:"note,omitempty"`
}

// Group is the requests that change the same way: same outcomes, same
// rules, same service, same department.
type Group struct {
	From        Outcome `json:"from"`
	To          Outcome `json:"to"`
	FromRule    string  `json:"from_rule"`
	ToRule      string  `json:"to_rule"`
	Service     string  `json:"service"`
	ClientGroup string  `json:"client_group"`
	// ServiceTitle and ClientGroupTitle are the new rules' titles.
	ServiceTitle     string `json:"service_title,omitempty"`
	ClientGroupTitle string `json:"client_group_title,omitempty"`
	Count            int64  `json:"count"`
	// Uncertain counts requests whose new outcome rests on facts the log
	// does not have (the body's file parts, or whether a tunnel cut at its
	// old budget would exceed a larger new one).
	Uncertain int64     `json:"uncertain,omitempty"`
	Examples  []Example `json:"examples"`
}

// Transition counts the requests going from one outcome to another.
type Transition struct {
	From  Outcome `json:"from"`
	To    Outcome `json:"to"`
	Count int64   `json:"count"`
}

// Input is one file (or standard input) that was read.
type Input struct {
	Name  string `json:"name"`
	Gzip  bool   `json:"gzip,omitempty"`
	Lines int64  `json:"lines"`
	Error string `json:"error,omitempty"`
}

// Malformed is a line that is not an audit line.
type Malformed struct {
	File  string `json:"file"`
	Line  int    `json:"line"`
	Error string `json:"error"`
}

// Lines accounts for every line read.
type Lines struct {
	Read int64 `json:"read"`
	// Replayed are the lines with a decision, decided again.
	Replayed int64 `json:"replayed"`
	// NoDecision are refusals and sekisho's own pages: nothing to replay.
	NoDecision int64 `json:"no_decision"`
	// InspectedSessions are CONNECTs opened under both rule sets: the
	// requests inside are replayed on their own lines.
	InspectedSessions int64 `json:"inspected_sessions"`
	OutsidePeriod     int64 `json:"outside_period"`
	Malformed         int64 `json:"malformed"`
}

// Result is what a replay found, and the document the JSON format writes.
type Result struct {
	Rules     []string `json:"rules"`
	RulesHash string   `json:"rules_hash"`
	// Baseline is "logged" (the decisions in the log) or the baseline
	// rules' files.
	Baseline          []string    `json:"baseline"`
	Inputs            []Input     `json:"inputs"`
	Lines             Lines       `json:"lines"`
	MalformedExamples []Malformed `json:"malformed_examples"`
	// Changed counts the requests whose outcome changes.
	Changed     int64        `json:"changed"`
	Uncertain   int64        `json:"uncertain"`
	Transitions []Transition `json:"transitions"`
	Changes     []Group      `json:"changes"`
	// RuleOnly are requests with the same outcome by another rule: not a
	// change for the city hall, but worth a look (a rule that no longer
	// matches anything, say).
	RuleOnlyCount int64   `json:"rule_only_count"`
	RuleOnly      []Group `json:"rule_only"`
}

type groupKey struct {
	from, to                          Outcome
	fromRule, toRule, service, client string
}

// Replayer decides logged requests again. Its memory is bounded by the
// number of distinct groups (and a few examples each), not by lines.
type Replayer struct {
	opt       Options
	changes   map[groupKey]*Group
	ruleOnly  map[groupKey]*Group
	trans     map[[2]Outcome]int64
	inputs    []Input
	lines     Lines
	bad       []Malformed
	changed   int64
	uncertain int64
	ruleOnlyN int64
}

// New returns a Replayer for opt.Rules.
func New(opt Options) *Replayer {
	if opt.HoldBodyBytes <= 0 {
		opt.HoldBodyBytes = DefaultHoldBodyBytes
	}
	if opt.Examples <= 0 {
		opt.Examples = 3
	}
	return &Replayer{
		opt:      opt,
		changes:  make(map[groupKey]*Group),
		ruleOnly: make(map[groupKey]*Group),
		trans:    make(map[[2]Outcome]int64),
	}
}

// Read replays one input (plain or gzip). Malformed lines are counted; the
// error returned is about the input itself.
func (p *Replayer) Read(name string, r io.Reader) error {
	in := Input{Name: name}
	defer func() { p.inputs = append(p.inputs, in) }()
	rd, err := audit.NewReader(r)
	if err != nil {
		in.Error = err.Error()
		return fmt.Errorf("%s: %w", name, err)
	}
	defer rd.Close()
	in.Gzip = rd.Gzip()
	rd.Skip(audit.FieldRulesHash, audit.FieldDuration, audit.FieldASN)
	var e audit.Entry
	for {
		err := rd.Next(&e)
		if err == nil {
			in.Lines++
			p.lines.Read++
			p.Add(name, rd.Line(), &e)
			continue
		}
		if err == io.EOF {
			return nil
		}
		var le *audit.LineError
		if errors.As(err, &le) {
			in.Lines++
			p.lines.Read++
			p.lines.Malformed++
			if len(p.bad) < 10 {
				p.bad = append(p.bad, Malformed{File: name, Line: le.Line, Error: le.Err.Error()})
			}
			continue
		}
		in.Error = err.Error()
		return fmt.Errorf("%s: %w", name, err)
	}
}

// IsStream reports whether a logged request was a tunnel or WebSocket.
func IsStream(e *audit.Entry) bool {
	return e.Stream || e.Kind == audit.KindTunnel || e.Mode == "tunnel" || e.Mode == "websocket"
}

// budgetApplies: the upload budget governs streams, except the session of
// an intercepted CONNECT, whose requests are decided one by one.
func budgetApplies(e *audit.Entry) bool {
	return IsStream(e) && !(e.Kind == audit.KindTunnel && e.Mode == "inspected")
}

// bodySent reports whether the whole body of an allowed request went
// upstream, so that upload_bytes is its size.
func bodySent(e *audit.Entry) bool {
	return e.Error == "" && e.Action != "" && !(e.Action == "block" && !e.WouldBlock) && e.Status > 0 && e.Status < 500
}

// Facts rebuilds the facts the proxy gathered for a logged request, as the
// proxy would have them at its final decision. hold is the proxy's
// hold_body_bytes: for a body without a length, what the proxy would have
// seen of it is derived from the bytes that went upstream.
func Facts(e *audit.Entry, hold int64) rules.Facts {
	f := rules.Facts{Final: true, Host: e.Host, Port: e.Port, Method: e.Method, Country: e.Country}
	if ap, err := netip.ParseAddrPort(e.Client); err == nil {
		f.Client = ap.Addr().Unmap()
	} else if a, err := netip.ParseAddr(e.Client); err == nil {
		f.Client = a.Unmap()
	}
	if ap, err := netip.ParseAddrPort(e.Addr); err == nil {
		f.Addr = ap.Addr().Unmap()
	} else if a, err := netip.ParseAddr(e.Addr); err == nil {
		f.Addr = a.Unmap()
	}
	if e.Method != "CONNECT" {
		f.Path = e.Path
	}
	b := &f.Body
	if IsStream(e) {
		f.Stream = true
		b.SizeExact, b.FileParts, b.PartsComplete = true, rules.TriNo, true
		return f
	}
	switch {
	case e.BodyBytes > 0:
		b.Present, b.Size, b.SizeExact = true, e.BodyBytes, true
	case e.BodyBytes < 0:
		b.Present, b.Size = true, e.BodyBytesMin
		if hold > 0 && bodySent(e) {
			// What the proxy would see holding the body back.
			if e.UploadBytes <= hold {
				b.Size, b.SizeExact, b.Present = e.UploadBytes, true, e.UploadBytes > 0
			} else {
				b.Size = max(b.Size, hold+1)
			}
		}
	default:
		b.SizeExact = true
	}
	b.ContentType = e.ContentType
	b.Encoded = e.Encoded
	switch e.FileParts {
	case "yes":
		b.FileParts = rules.TriYes
	case "unknown":
		b.FileParts = rules.TriUnknown
	default:
		b.FileParts = rules.TriNo
	}
	if !b.Present {
		b.FileParts = rules.TriNo
	}
	b.PartTypes = e.PartTypes
	b.PartsComplete = !e.PartsIncomplete && b.FileParts != rules.TriUnknown
	return f
}

// enforcedCut reports whether the log shows a tunnel closed at its budget
// (in report-only mode a tunnel goes on past it, and its upload is then
// larger than the budget).
func enforcedCut(e *audit.Entry) bool {
	return budgetApplies(e) && e.BudgetExceeded && e.Budget >= 0 && e.UploadBytes <= e.Budget
}

// logged is the outcome and rule the log records.
func logged(e *audit.Entry) (Outcome, string) {
	var o Outcome
	switch e.Action {
	case "block":
		o = Block
		if e.WouldBlock {
			o = WouldBlock
		}
	case "log":
		o = Log
	}
	if o != Block && o != WouldBlock && budgetApplies(e) && e.BudgetExceeded {
		if enforcedCut(e) {
			o = Cut
		} else {
			o = WouldBlock
		}
	}
	rule := e.Rule
	if rule == "" {
		rule = rules.DefaultRuleName
	}
	return o, rule
}

// verdict is the outcome a set gives a logged request.
type verdict struct {
	o          Outcome
	rule       string
	f          rules.Facts
	failClosed bool   // a block rule matched only because body facts are unknown
	budget     int64  // the stream's upload budget
	budgetNote string // a tunnel cut at its old budget, under a larger new one
}

// decide decides a logged request with set, as the proxy would.
func decide(set *rules.Set, e *audit.Entry, hold int64) verdict {
	v := verdict{f: Facts(e, hold)}
	set.Prepare(&v.f)
	d := set.Decide(&v.f)
	v.rule, v.failClosed, v.budget = d.RuleName(), d.FailClosed, d.Budget
	switch {
	case d.Action == rules.Block && d.ReportOnly:
		v.o = WouldBlock
	case d.Action == rules.Block:
		v.o = Block
	case d.Action == rules.Log:
		v.o = Log
	}
	if v.o != Block && v.o != WouldBlock && budgetApplies(e) && d.Budget >= 0 {
		cut := enforcedCut(e)
		switch {
		case e.UploadBytes > d.Budget || (cut && d.Budget <= e.Budget):
			v.o = Cut
			if d.ReportOnly {
				v.o = WouldBlock
			}
		case cut:
			v.budgetNote = fmt.Sprintf("cut at its old budget (%s); whether it would exceed %s is not in the log",
				rules.FormatSize(e.Budget), rules.FormatSize(d.Budget))
		}
	}
	return v
}

// inspect tells whether set opens a logged CONNECT, and by which rule.
func inspect(set *rules.Set, e *audit.Entry, hold int64) (bool, string) {
	f := Facts(e, hold)
	set.Prepare(&f)
	in := set.Inspect(&f)
	return in.Inspect, in.Rule
}

// Add replays one decoded line; file and line locate it for examples.
func (p *Replayer) Add(file string, line int, e *audit.Entry) {
	if (!p.opt.Since.IsZero() && e.Time.Before(p.opt.Since)) || (!p.opt.Until.IsZero() && !e.Time.Before(p.opt.Until)) {
		p.lines.OutsidePeriod++
		return
	}
	if e.Action == "" || e.Host == "" || e.Reason == "selftest" {
		p.lines.NoDecision++
		return
	}
	// A CONNECT while interception was on: first, was it opened, and
	// would it be?
	intercepting := e.Kind == audit.KindTunnel && e.Method == "CONNECT" && e.Inspection != ""
	var oldOpen, newOpen bool
	var oldInspRule, newInspRule string
	if intercepting {
		oldOpen, oldInspRule = e.Mode == "inspected", e.Inspection
		if p.opt.Baseline != nil {
			oldOpen, oldInspRule = inspect(p.opt.Baseline, e, p.opt.HoldBodyBytes)
		}
		newOpen, newInspRule = inspect(p.opt.Rules, e, p.opt.HoldBodyBytes)
		if oldOpen && newOpen {
			p.lines.InspectedSessions++
			return
		}
	}
	p.lines.Replayed++
	from, fromRule := logged(e)
	oldFailClosed := e.FailClosed
	if p.opt.Baseline != nil {
		b := decide(p.opt.Baseline, e, p.opt.HoldBodyBytes)
		from, fromRule, oldFailClosed = b.o, b.rule, b.failClosed
	}
	if oldOpen {
		from, fromRule, oldFailClosed = Inspected, oldInspRule, false
	}
	v := decide(p.opt.Rules, e, p.opt.HoldBodyBytes)
	to, toRule, f := v.o, v.rule, &v.f
	if newOpen {
		to, toRule, v.failClosed, v.budgetNote = Inspected, newInspRule, false, ""
	}
	if from == to && fromRule == toRule {
		return
	}
	uncertain := v.budgetNote
	if v.failClosed && !oldFailClosed {
		uncertain = "fail closed: the rule needs body facts the log does not have (file parts, types or size)"
	}
	k := groupKey{from, to, fromRule, toRule, f.ServiceName(), f.GroupName()}
	groups := p.changes
	if from == to {
		groups = p.ruleOnly
		p.ruleOnlyN++
	} else {
		p.changed++
		p.trans[[2]Outcome{from, to}]++
		if uncertain != "" {
			p.uncertain++
		}
	}
	g := groups[k]
	if g == nil {
		g = &Group{From: from, To: to, FromRule: fromRule, ToRule: toRule, Service: k.service, ClientGroup: k.client}
		if f.Service != nil {
			g.ServiceTitle = f.Service.Title
		}
		if f.Group != nil {
			g.ClientGroupTitle = f.Group.Title
		}
		groups[k] = g
	}
	g.Count++
	if uncertain != "" {
		g.Uncertain++
	}
	if len(g.Examples) < p.opt.Examples {
		note := uncertain
		if note == "" && to == Cut {
			note = "over the new upload budget of " + rules.FormatSize(v.budget)
		}
		g.Examples = append(g.Examples, example(file, line, e, f, fromRule, toRule, note))
	}
}

func example(file string, line int, e *audit.Entry, f *rules.Facts, fromRule, toRule, note string) Example {
	x := Example{File: file, Line: line, Time: e.Time, ID: e.ID, Client: e.Client, FromRule: fromRule, ToRule: toRule, Note: note}
	if e.Method == "CONNECT" {
		x.Request = fmt.Sprintf("CONNECT %s", hostPort(e.Host, e.Port))
	} else {
		scheme := e.Scheme
		if scheme == "" {
			scheme = "http"
		}
		host := e.Host
		if !(scheme == "http" && e.Port == 80) && !(scheme == "https" && e.Port == 443) && e.Port != 0 {
			host = hostPort(e.Host, e.Port)
		} else if isIPv6(e.Host) {
			host = "[" + e.Host + "]"
		}
		x.Request = fmt.Sprintf("%s %s://%s%s", e.Method, scheme, host, e.Path)
	}
	x.Country = e.Country
	if f.Effective != "" && f.Effective != e.Country {
		x.Country += " → " + f.Effective
	}
	if !f.Stream && f.Body.Present {
		size := "size unknown"
		switch {
		case f.Body.SizeExact:
			size = rules.FormatSize(f.Body.Size)
		case f.Body.Size > 0:
			size = "at least " + rules.FormatSize(f.Body.Size)
		}
		x.Body = size
		if f.Body.ContentType != "" {
			x.Body += " " + f.Body.ContentType
		}
		if e.FileParts != "" && e.FileParts != "no" {
			x.Body += ", file parts " + e.FileParts
		}
		if len(e.PartTypes) > 0 {
			x.Body += fmt.Sprintf(" %v", e.PartTypes)
		}
	} else if f.Stream {
		x.Body = "sent " + rules.FormatSize(e.UploadBytes)
		if e.Budget != 0 {
			x.Body += " (budget " + rules.FormatSize(e.Budget) + ")"
		}
	}
	return x
}

func isIPv6(h string) bool {
	a, err := netip.ParseAddr(h)
	return err == nil && a.Is6()
}

func hostPort(host string, port uint16) string {
	if isIPv6(host) {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("%s:%d", host, port)
}

// Result gathers what the replay found.
func (p *Replayer) Result() *Result {
	r := &Result{
		Rules:             p.opt.Rules.Sources(),
		RulesHash:         p.opt.Rules.Hash(),
		Baseline:          []string{"logged"},
		Inputs:            append([]Input{}, p.inputs...),
		Lines:             p.lines,
		MalformedExamples: append([]Malformed{}, p.bad...),
		Changed:           p.changed,
		Uncertain:         p.uncertain,
		Transitions:       []Transition{},
		RuleOnlyCount:     p.ruleOnlyN,
	}
	if len(r.RulesHash) > 12 {
		r.RulesHash = r.RulesHash[:12]
	}
	if p.opt.Baseline != nil {
		r.Baseline = p.opt.Baseline.Sources()
	}
	for t, n := range p.trans {
		r.Transitions = append(r.Transitions, Transition{From: t[0], To: t[1], Count: n})
	}
	sort.Slice(r.Transitions, func(i, j int) bool {
		a, b := r.Transitions[i], r.Transitions[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		if a.From != b.From {
			return a.From < b.From
		}
		return a.To < b.To
	})
	r.Changes = sortedGroups(p.changes)
	r.RuleOnly = sortedGroups(p.ruleOnly)
	return r
}

func sortedGroups(m map[groupKey]*Group) []Group {
	out := make([]Group, 0, len(m))
	for _, g := range m {
		out = append(out, *g)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := &out[i], &out[j]
		switch {
		case a.Count != b.Count:
			return a.Count > b.Count
		case a.To != b.To:
			return a.To > b.To
		case a.From != b.From:
			return a.From < b.From
		case a.ToRule != b.ToRule:
			return a.ToRule < b.ToRule
		case a.FromRule != b.FromRule:
			return a.FromRule < b.FromRule
		case a.Service != b.Service:
			return a.Service < b.Service
		}
		return a.ClientGroup < b.ClientGroup
	})
	return out
}

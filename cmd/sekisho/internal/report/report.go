// Package report turns audit logs into the usage report a city hall is
// asked for: which departments sent how much to which service in which
// country, what was blocked, and where each service's traffic really went
// compared with where the service declares it stores data.
//
// In March 2021 the Ministry of Internal Affairs asked every municipality
// to report within a week how it used LINE and what went through it; most
// could not answer from their own records. sekisho's audit log holds the
// answer, and this package reads it: streaming, so that memory grows with
// the number of distinct (department, service, country) keys and hours,
// never with the number of lines, and fast enough for months of logs.
//
// Non-goals: it does not geolocate or decide anything again (the log says
// what was decided; `sekisho whatif` replays decisions), and it does not
// keep per-request detail (the log itself is the detail).
package report

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/sekisho/sekisho/proxy/audit"
)

// Options shape a report.
type Options struct {
	// Since and Until bound the period: a line counts when Since <= time <
	// Until. Zero values leave that side open.
	Since, Until time.Time
	// GroupTitles and ServiceTitles map names, as logged, to the titles
	// the rules give them (福祉課 for "welfare"), so that the report reads
	// the way the city hall speaks. Missing names are shown as logged.
	GroupTitles, ServiceTitles map[string]string
	// MaxMalformed is how many malformed lines are kept as examples (with
	// file and line number); 0 means 10. All of them are counted.
	MaxMalformed int
	// GeneratedAt is shown in the report when set (tests leave it zero so
	// that their output does not change).
	GeneratedAt time.Time
}

// Counts are the traffic figures of one row, service, country or total.
type Counts struct {
	// Requests counts requests and tunnels that reached a decision.
	Requests int64 `json:"requests"`
	// Uploads counts HTTP requests (plain or inspected) that sent at least
	// one byte of body upstream. Tunnels and WebSockets are not counted
	// here, since every TLS handshake sends bytes; their bytes are in
	// UploadBytes.
	Uploads int64 `json:"uploads"`
	// UploadBytes is every byte sent upstream: request bodies and what
	// clients pushed up tunnels and WebSockets.
	UploadBytes int64 `json:"upload_bytes"`
	// Blocked counts requests stopped by a block rule (enforced).
	Blocked int64 `json:"blocked"`
	// WouldBlock counts requests a block rule would have stopped had the
	// rules not been in report-only mode.
	WouldBlock int64 `json:"would_block"`
	// OverBudget counts tunnels and WebSockets whose client sent more than
	// the upload budget (closed, unless in report-only mode).
	OverBudget int64 `json:"over_budget"`
	// DownloadBytes is every byte received from upstream.
	DownloadBytes int64 `json:"download_bytes"`
}

func (c *Counts) add(o *Counts) {
	c.Requests += o.Requests
	c.Uploads += o.Uploads
	c.UploadBytes += o.UploadBytes
	c.Blocked += o.Blocked
	c.WouldBlock += o.WouldBlock
	c.OverBudget += o.OverBudget
	c.DownloadBytes += o.DownloadBytes
}

// Row is one department × service × country: the unit of the survey.
type Row struct {
	Group        string `json:"client_group"`
	GroupTitle   string `json:"client_group_title,omitempty"`
	Service      string `json:"service"`
	ServiceTitle string `json:"service_title,omitempty"`
	// Country is the effective country: the stricter of the dialed
	// address's country and the service's declared storage country, as
	// the rules used it.
	Country string `json:"country"`
	// Destination is the class of Country when the request was decided:
	// domestic, foreign, unknown or internal.
	Destination string `json:"destination"`
	Counts
}

// Abroad reports whether the row's data left the country (or went
// somewhere no database places, which counts as abroad).
func (r *Row) Abroad() bool { return isAbroad(r.Destination) }

func isAbroad(dest string) bool { return dest == "foreign" || dest == "unknown" }

// CountryShare is one country a service's traffic went to.
type CountryShare struct {
	Country     string `json:"country"`
	Requests    int64  `json:"requests"`
	UploadBytes int64  `json:"upload_bytes"`
}

// Service is one service's totals, and the comparison that the 2021 LINE
// case was about: where its traffic actually went (the countries of the
// addresses dialed) against the country where it declares it stores data.
type Service struct {
	Service string `json:"service"`
	Title   string `json:"title,omitempty"`
	Counts
	// SentAbroadBytes is the upload to foreign or unknown destinations.
	SentAbroadBytes int64 `json:"sent_abroad_bytes"`
	// Dialed are the countries of the addresses connected to, most
	// requests first.
	Dialed []CountryShare `json:"dialed_countries"`
	// Declared are the storage countries the catalog declared for the
	// service (or its endpoints) when the requests were decided.
	Declared []string `json:"declared_countries"`
	// Mismatch is true when a request went to another country than the
	// storage country declared for it (for the service, or for the
	// endpoint it used): a domestic CDN edge in front of storage abroad,
	// or the reverse. Internal addresses do not count.
	Mismatch bool `json:"mismatch"`
}

// Country is the traffic to one effective country.
type Country struct {
	Country     string `json:"country"`
	Destination string `json:"destination"`
	Counts
}

// Point is one bucket of the timeline of blocks.
type Point struct {
	Start      time.Time `json:"start"`
	Blocked    int64     `json:"blocked"`
	WouldBlock int64     `json:"would_block"`
	OverBudget int64     `json:"over_budget"`
}

// Timeline is blocks over time, in buckets sized to the period: hours up
// to three days, days up to three months, weeks beyond.
type Timeline struct {
	Unit   string  `json:"unit"` // hour, day or week
	Points []Point `json:"points"`
}

// Reason counts lines that never reached a decision (refused clients,
// malformed requests, denied destinations, sekisho's own pages).
type Reason struct {
	Reason string `json:"reason"`
	Count  int64  `json:"count"`
}

// Input is one file (or standard input) that was read.
type Input struct {
	Name  string `json:"name"`
	Gzip  bool   `json:"gzip,omitempty"`
	Lines int64  `json:"lines"`
	// Error is set when the input could not be read to its end (a
	// truncated gzip file): what was read before is counted.
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
	// Counted are the lines in the period that reached a decision: the
	// traffic in the tables.
	Counted int64 `json:"counted"`
	// NotProxied are lines in the period without a decision (see Reasons).
	NotProxied int64 `json:"not_proxied"`
	// InspectedSessions are the lines of intercepted CONNECTs: their
	// requests have lines of their own and are counted there.
	InspectedSessions int64 `json:"inspected_sessions"`
	OutsidePeriod     int64 `json:"outside_period"`
	Malformed         int64 `json:"malformed"`
}

// Report is the result, and the document the JSON format writes.
type Report struct {
	GeneratedAt time.Time `json:"generated_at,omitzero"`
	Since       time.Time `json:"since,omitzero"`
	Until       time.Time `json:"until,omitzero"`
	// First and Last are the times of the first and last line counted.
	First             time.Time   `json:"first,omitzero"`
	Last              time.Time   `json:"last,omitzero"`
	Inputs            []Input     `json:"inputs"`
	Lines             Lines       `json:"lines"`
	MalformedExamples []Malformed `json:"malformed_examples"`
	Totals            Counts      `json:"totals"`
	// Abroad are the totals to foreign and unknown destinations.
	Abroad     Counts    `json:"abroad"`
	Rows       []Row     `json:"rows"`
	Services   []Service `json:"services"`
	Countries  []Country `json:"countries"`
	Timeline   Timeline  `json:"timeline"`
	NotProxied []Reason  `json:"not_proxied"`
}

type rowKey struct {
	group, service, country, dest string
}

type svcAgg struct {
	dialed   map[string]*CountryShare
	declared map[string]struct{}
	mismatch bool // a request went elsewhere than the country declared for it
}

type blocks struct{ blocked, would, over int64 }

// Aggregator accumulates audit lines. It holds one entry per distinct
// row key, service, dialed country and hour with a block: its memory does
// not grow with the number of lines.
type Aggregator struct {
	opt      Options
	rows     map[rowKey]*Counts
	services map[string]*svcAgg
	hours    map[int64]*blocks // quarter hour since the epoch (UTC) → blocks in it
	offset   int               // UTC offset of the first line counted
	haveTime bool
	first    time.Time
	last     time.Time
	reasons  map[string]int64
	inputs   []Input
	lines    Lines
	bad      []Malformed
}

// New returns an empty Aggregator.
func New(opt Options) *Aggregator {
	if opt.MaxMalformed <= 0 {
		opt.MaxMalformed = 10
	}
	return &Aggregator{
		opt:      opt,
		rows:     make(map[rowKey]*Counts),
		services: make(map[string]*svcAgg),
		hours:    make(map[int64]*blocks),
		reasons:  make(map[string]int64),
	}
}

// skipFields are the audit fields a report never looks at: per-request
// values whose decoding would cost an allocation per line.
var skipFields = []string{
	audit.FieldID, audit.FieldClient, audit.FieldPath, audit.FieldAddr, audit.FieldError,
	audit.FieldHost, audit.FieldPartTypes, audit.FieldRulesHash, audit.FieldDuration,
	audit.FieldEndpoint, audit.FieldASN, audit.FieldContentType, audit.FieldMethod, audit.FieldScheme,
}

// Read reads one input to its end (plain or gzip). Malformed lines are
// counted and kept as examples; the error returned is about the input
// itself (it could not be opened as gzip, or it ends in the middle), and
// the lines read before it are counted all the same.
func (a *Aggregator) Read(name string, r io.Reader) error {
	in := Input{Name: name}
	defer func() { a.inputs = append(a.inputs, in) }()
	rd, err := audit.NewReader(r)
	if err != nil {
		in.Error = err.Error()
		return fmt.Errorf("%s: %w", name, err)
	}
	defer rd.Close()
	in.Gzip = rd.Gzip()
	rd.Skip(skipFields...)
	var e audit.Entry
	for {
		err := rd.Next(&e)
		if err == nil {
			in.Lines++
			a.lines.Read++
			a.Add(&e)
			continue
		}
		if err == io.EOF {
			return nil
		}
		var le *audit.LineError
		if errors.As(err, &le) {
			in.Lines++
			a.lines.Read++
			a.Malformed(name, le.Line, le.Err)
			continue
		}
		in.Error = err.Error()
		return fmt.Errorf("%s: %w", name, err)
	}
}

// Malformed counts a line that is not an audit line, keeping the first few
// as examples.
func (a *Aggregator) Malformed(file string, line int, err error) {
	a.lines.Malformed++
	if len(a.bad) < a.opt.MaxMalformed {
		a.bad = append(a.bad, Malformed{File: file, Line: line, Error: err.Error()})
	}
}

func isStream(e *audit.Entry) bool {
	return e.Stream || e.Kind == audit.KindTunnel || e.Mode == "tunnel" || e.Mode == "websocket"
}

// Add counts one decoded line.
func (a *Aggregator) Add(e *audit.Entry) {
	if (!a.opt.Since.IsZero() && e.Time.Before(a.opt.Since)) || (!a.opt.Until.IsZero() && !e.Time.Before(a.opt.Until)) {
		a.lines.OutsidePeriod++
		return
	}
	if !a.haveTime {
		a.haveTime = true
		a.first, a.last = e.Time, e.Time
		_, a.offset = e.Time.Zone()
	} else if e.Time.Before(a.first) {
		a.first = e.Time
	} else if e.Time.After(a.last) {
		a.last = e.Time
	}
	if e.Kind == audit.KindTunnel && e.Mode == "inspected" {
		a.lines.InspectedSessions++
		return
	}
	if e.Action == "" || e.Reason == "selftest" {
		// No decision, or a helpdesk's self-test of a PC (its test upload
		// is blocked on purpose and never leaves sekisho).
		a.lines.NotProxied++
		a.reasons[notProxiedReason(e)]++
		return
	}
	a.lines.Counted++
	country := e.Effective
	if country == "" {
		country = e.Country
	}
	if country == "" {
		country = "unknown"
	}
	dest := e.Destination
	if dest == "" {
		switch country {
		case "internal", "unknown":
			dest = country
		default:
			dest = "-"
		}
	}
	service := e.Service
	if service == "" {
		service = "other"
	}
	group := e.ClientGroup
	if group == "" {
		group = "other"
	}
	k := rowKey{group, service, country, dest}
	c := a.rows[k]
	if c == nil {
		c = &Counts{}
		a.rows[k] = c
	}
	c.Requests++
	if e.UploadBytes > 0 && !isStream(e) {
		c.Uploads++
	}
	c.UploadBytes += e.UploadBytes
	c.DownloadBytes += e.DownloadBytes
	blocked := e.Action == "block" && !e.WouldBlock
	if blocked {
		c.Blocked++
	}
	if e.WouldBlock {
		c.WouldBlock++
	}
	if e.BudgetExceeded {
		c.OverBudget++
	}

	s := a.services[service]
	if s == nil {
		s = &svcAgg{dialed: make(map[string]*CountryShare), declared: make(map[string]struct{})}
		a.services[service] = s
	}
	dialed := e.Country
	if dialed == "" {
		dialed = "unknown"
	}
	cs := s.dialed[dialed]
	if cs == nil {
		cs = &CountryShare{Country: dialed}
		s.dialed[dialed] = cs
	}
	cs.Requests++
	cs.UploadBytes += e.UploadBytes
	if e.Declared != "" {
		if _, ok := s.declared[e.Declared]; !ok {
			s.declared[e.Declared] = struct{}{}
		}
		// Per request: a service may declare one country for itself and
		// another for an endpoint (LINE: JP, its media KR).
		if dialed != e.Declared && dialed != "internal" {
			s.mismatch = true
		}
	}

	if blocked || e.WouldBlock || e.BudgetExceeded {
		// In absolute time: lines may carry different offsets (a DST
		// change, logs of several hosts), and the axis is laid out in one
		// zone only when the report is built. Quarter hours, for zones
		// such as +05:30.
		h := floorDiv(e.Time.Unix(), 900)
		b := a.hours[h]
		if b == nil {
			b = &blocks{}
			a.hours[h] = b
		}
		switch {
		case blocked:
			b.blocked++
		case e.WouldBlock:
			b.would++
		default:
			b.over++
		}
	}
}

// notProxiedReason names why a line has no decision.
func notProxiedReason(e *audit.Entry) string {
	switch {
	case e.Reason != "":
		return e.Reason
	case e.Mode == "" && e.Status > 0 && e.Status < 400:
		return "sekisho_page" // its own pages: the PAC file, the CA certificate
	case e.Status > 0:
		return fmt.Sprintf("status_%d", e.Status)
	}
	return "no_decision"
}

// localHour numbers the hour of t in t's own UTC offset (the wall clock of
// the city hall that wrote it).
func localHour(t time.Time) int64 {
	_, off := t.Zone()
	return floorDiv(t.Unix()+int64(off), 3600)
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// Report builds the result. The Aggregator may go on reading afterwards.
func (a *Aggregator) Report() *Report {
	r := &Report{
		GeneratedAt:       a.opt.GeneratedAt,
		Since:             a.opt.Since,
		Until:             a.opt.Until,
		First:             a.first,
		Last:              a.last,
		Inputs:            append([]Input(nil), a.inputs...),
		Lines:             a.lines,
		MalformedExamples: append([]Malformed{}, a.bad...),
		Rows:              []Row{},
		Services:          []Service{},
		Countries:         []Country{},
		NotProxied:        []Reason{},
	}
	if r.Inputs == nil {
		r.Inputs = []Input{}
	}
	svcTotals := map[string]*Service{}
	countries := map[[2]string]*Country{}
	for k, c := range a.rows {
		r.Rows = append(r.Rows, Row{
			Group: k.group, GroupTitle: title(a.opt.GroupTitles, k.group),
			Service: k.service, ServiceTitle: title(a.opt.ServiceTitles, k.service),
			Country: k.country, Destination: k.dest, Counts: *c,
		})
		r.Totals.add(c)
		if isAbroad(k.dest) {
			r.Abroad.add(c)
		}
		s := svcTotals[k.service]
		if s == nil {
			s = &Service{Service: k.service, Title: title(a.opt.ServiceTitles, k.service)}
			svcTotals[k.service] = s
		}
		s.add(c)
		if isAbroad(k.dest) {
			s.SentAbroadBytes += c.UploadBytes
		}
		ck := [2]string{k.country, k.dest}
		ct := countries[ck]
		if ct == nil {
			ct = &Country{Country: k.country, Destination: k.dest}
			countries[ck] = ct
		}
		ct.add(c)
	}
	sort.Slice(r.Rows, func(i, j int) bool {
		a, b := &r.Rows[i], &r.Rows[j]
		if a.Group != b.Group {
			return a.Group < b.Group
		}
		if a.Service != b.Service {
			return a.Service < b.Service
		}
		if a.Country != b.Country {
			return a.Country < b.Country
		}
		return a.Destination < b.Destination
	})
	for name, agg := range a.services {
		s := svcTotals[name]
		for _, cs := range agg.dialed {
			s.Dialed = append(s.Dialed, *cs)
		}
		sort.Slice(s.Dialed, func(i, j int) bool {
			if s.Dialed[i].Requests != s.Dialed[j].Requests {
				return s.Dialed[i].Requests > s.Dialed[j].Requests
			}
			return s.Dialed[i].Country < s.Dialed[j].Country
		})
		s.Declared = []string{}
		for d := range agg.declared {
			s.Declared = append(s.Declared, d)
		}
		sort.Strings(s.Declared)
		s.Mismatch = agg.mismatch
		r.Services = append(r.Services, *s)
	}
	sort.Slice(r.Services, func(i, j int) bool { return r.Services[i].Service < r.Services[j].Service })
	for _, c := range countries {
		r.Countries = append(r.Countries, *c)
	}
	sort.Slice(r.Countries, func(i, j int) bool {
		if r.Countries[i].Country != r.Countries[j].Country {
			return r.Countries[i].Country < r.Countries[j].Country
		}
		return r.Countries[i].Destination < r.Countries[j].Destination
	})
	for reason, n := range a.reasons {
		r.NotProxied = append(r.NotProxied, Reason{Reason: reason, Count: n})
	}
	sort.Slice(r.NotProxied, func(i, j int) bool {
		if r.NotProxied[i].Count != r.NotProxied[j].Count {
			return r.NotProxied[i].Count > r.NotProxied[j].Count
		}
		return r.NotProxied[i].Reason < r.NotProxied[j].Reason
	})
	r.Timeline = a.timeline()
	return r
}

func title(m map[string]string, name string) string {
	if t := m[name]; t != name {
		return t
	}
	return ""
}

// maxPoints bounds the timeline, whatever the period.
const maxPoints = 400

// timeline buckets the hours with blocks into hours, days or weeks,
// filling the empty buckets of the period so that the chart's x axis is
// time.
func (a *Aggregator) timeline() Timeline {
	if !a.haveTime {
		return Timeline{Unit: "day", Points: []Point{}}
	}
	zone := time.FixedZone("", a.offset)
	if a.offset == 0 {
		zone = time.UTC
	}
	firstH := localHour(a.first.In(zone))
	lastH := localHour(a.last.In(zone))
	unit, size := "hour", int64(1)
	switch span := lastH - firstH + 1; {
	case span > 92*24:
		unit, size = "week", 7*24
	case span > 72:
		unit, size = "day", 24
	}
	bucket := func(h int64) int64 {
		if unit == "week" {
			// Weeks start on Monday: day 0 (1970-01-01) was a Thursday.
			day := floorDiv(h, 24)
			return floorDiv(day+3, 7)*7 - 3
		}
		return floorDiv(h, size)
	}
	toHour := func(b int64) int64 {
		if unit == "week" {
			return b * 24
		}
		return b * size
	}
	step := int64(1)
	if unit == "week" {
		step = 7
	}
	from, to := bucket(firstH), bucket(lastH)
	if (to-from)/step+1 > maxPoints {
		from = to - (maxPoints-1)*step
	}
	idx := map[int64]int{}
	points := []Point{}
	for b := from; b <= to; b += step {
		idx[b] = len(points)
		start := time.Unix(toHour(b)*3600-int64(a.offset), 0).In(zone)
		points = append(points, Point{Start: start})
	}
	for q, bl := range a.hours {
		h := floorDiv(q*900+int64(a.offset), 3600) // the hour in the report's zone
		i, ok := idx[bucket(h)]
		if !ok {
			continue
		}
		points[i].Blocked += bl.blocked
		points[i].WouldBlock += bl.would
		points[i].OverBudget += bl.over
	}
	return Timeline{Unit: unit, Points: points}
}

package rules

import (
	"net/netip"
	"path"
	"regexp"
	"strings"
)

// Set is one compiled, immutable rule set: the policy in force. The proxy
// loads the current Set once per request (Store.Load) and uses only that
// snapshot for the whole request, so a reload in the middle of a request
// cannot mix two policies.
type Set struct {
	sources        []string
	hash           string
	domestic       countrySet
	reportOnly     bool
	defaultAction  Action
	foreignBudget  int64
	domesticBudget int64
	catalog        *Catalog
	groups         []*ClientGroup
	rules          []*Rule
	tests          []*TestCase
	warnings       []string
	needsBody      bool

	inspectRules   []*Rule
	inspectDefault bool
	bypass         map[string]bypassMatch // domain → built-in bypass entry
}

// ClientGroup is a named set of client networks (a department, a school):
// the unit in which rules and dashboards speak of clients.
type ClientGroup struct {
	Name     string
	Title    string
	Networks []netip.Prefix
	index    int // 1-based; 0 is "other"
}

// Rule is one compiled rule. Conditions left out of the file match
// anything; every condition given must match (lists match any entry).
type Rule struct {
	Name        string
	Action      Action
	Message     string // why, in words, for the block page
	Alternative string // what to use instead, for the block page
	File        string
	Line        int
	// Budget is the upload budget this rule gives a stream, when HasBudget.
	Budget    int64
	HasBudget bool
	// Inspect is what an inspection rule decides (open the TLS or not).
	Inspect bool

	services     bitset
	domainsAll   map[string]struct{} // the domain and its subdomains
	domainsSub   map[string]struct{} // subdomains only ("*.example.com")
	networks     []netip.Prefix
	dests        uint8 // bit per Destination; 0 = any
	countries    *countrySet
	clients      bitset
	methods      []string
	ports        [][2]uint16
	paths        []pathPattern
	upload       Tri // TriUnknown = no condition
	minBody      int64
	fileParts    Tri
	contentTypes []string
	bodyConds    bool // any condition on the body: does not apply to streams
}

type pathPattern struct {
	prefix string
	glob   *regexp.Regexp
}

type bitset []uint64

func newBitset(n int) bitset { return make(bitset, (n+63)/64) }
func (b bitset) set(i int)   { b[i>>6] |= 1 << (i & 63) }
func (b bitset) has(i int) bool {
	return i>>6 < len(b) && b[i>>6]&(1<<(i&63)) != 0
}

// Hash identifies the set's sources (sha256 over names and contents): the
// value behind sekisho_rules_info and the "unchanged, not reloaded" check.
func (s *Set) Hash() string { return s.hash }

// Sources are the files the set was compiled from.
func (s *Set) Sources() []string { return s.sources }

// ReportOnly reports whether blocks are only recorded, not enforced.
func (s *Set) ReportOnly() bool { return s.reportOnly }

// Domestic lists the domestic countries.
func (s *Set) Domestic() []string { return s.domestic.codes() }

// Catalog is the service catalog of this set.
func (s *Set) Catalog() *Catalog { return s.catalog }

// Rules lists the rules in evaluation order.
func (s *Set) Rules() []*Rule { return s.rules }

// ClientGroups lists the client groups in lookup order.
func (s *Set) ClientGroups() []*ClientGroup { return s.groups }

// InspectionRules lists the inspection rules in evaluation order.
func (s *Set) InspectionRules() []*Rule { return s.inspectRules }

// Tests lists the test cases carried by the rules files.
func (s *Set) Tests() []*TestCase { return s.tests }

// Warnings are things a careful admin wants to know about the files that
// are not errors (a built-in domain claimed by a file's service).
func (s *Set) Warnings() []string { return s.warnings }

// DefaultAction is the action when no rule matches.
func (s *Set) DefaultAction() Action { return s.defaultAction }

// MayNeedBody reports whether any rule has a condition that can only be
// answered from the body (multipart parts, size of a body without length).
// When false the proxy never holds a body back.
func (s *Set) MayNeedBody() bool { return s.needsBody }

// ClientGroup returns the first group whose networks contain a, or nil.
func (s *Set) ClientGroup(a netip.Addr) *ClientGroup {
	a = a.Unmap()
	for _, g := range s.groups {
		for _, p := range g.Networks {
			if p.Contains(a) {
				return g
			}
		}
	}
	return nil
}

// Classify maps a country to its destination class under this set's
// domestic countries. An empty country counts as unknown.
func (s *Set) Classify(country string) Destination {
	switch country {
	case CountryInternal:
		return Internal
	case CountryUnknown, "":
		return Unknown
	}
	if s.domestic.has(country) {
		return Domestic
	}
	return Foreign
}

func strictness(d Destination) int {
	switch d {
	case Internal:
		return 0
	case Domestic:
		return 1
	}
	return 2 // foreign and unknown are equally strict: unknown is foreign
}

// Prepare derives the service, endpoint, client group, declared country,
// effective country and destination class from the facts the proxy
// gathered. It is called once per request, before Decide.
func (s *Set) Prepare(f *Facts) {
	f.Service, f.Endpoint = s.catalog.Lookup(f.Host)
	f.Declared = ""
	if f.Endpoint != nil && f.Endpoint.StorageCountry != "" {
		f.Declared = f.Endpoint.StorageCountry
	} else if f.Service != nil {
		f.Declared = f.Service.StorageCountry
	}
	f.Group = s.ClientGroup(f.Client)
	f.Effective = f.Country
	if f.Effective == "" {
		f.Effective = CountryUnknown
	}
	f.Destination = s.Classify(f.Country)
	if f.Declared != "" {
		if d := s.Classify(f.Declared); strictness(d) >= strictness(f.Destination) {
			f.Effective, f.Destination = f.Declared, d
		}
	}
}

type match uint8

const (
	no match = iota
	yes
	maybe
)

func and(a, b match) match {
	if a == no || b == no {
		return no
	}
	if a == maybe || b == maybe {
		return maybe
	}
	return yes
}

func boolMatch(b bool) match {
	if b {
		return yes
	}
	return no
}

// Decide evaluates the rules in order against prepared facts: the first
// rule that matches decides, else the default action. It does no I/O and
// does not allocate.
//
// A rule that can only be answered from body facts not yet known stops the
// evaluation with NeedBody (so that a later, more permissive rule cannot
// let the body through first); once f.Final is set, such a rule blocks if
// it is a block rule and is skipped otherwise.
func (s *Set) Decide(f *Facts) Decision {
	for _, r := range s.rules {
		switch r.match(s, f) {
		case yes:
			return s.decision(r, f)
		case maybe:
			if !f.Final {
				return Decision{NeedBody: true, Action: r.Action, Rule: r, ReportOnly: s.reportOnly, Budget: Unlimited}
			}
			if r.Action == Block {
				d := s.decision(r, f)
				d.FailClosed = true
				return d
			}
		}
	}
	return s.decision(nil, f)
}

func (s *Set) decision(r *Rule, f *Facts) Decision {
	d := Decision{Action: s.defaultAction, Rule: r, ReportOnly: s.reportOnly, Budget: Unlimited}
	if r != nil {
		d.Action = r.Action
	}
	if f.Stream {
		switch {
		case r != nil && r.HasBudget:
			d.Budget = r.Budget
		case f.Destination == Foreign || f.Destination == Unknown:
			d.Budget = s.foreignBudget
		default:
			d.Budget = s.domesticBudget
		}
	}
	return d
}

func (r *Rule) match(s *Set, f *Facts) match {
	if f.Stream && r.bodyConds {
		return no
	}
	if len(r.methods) > 0 && !containsMethod(r.methods, f.Method) {
		return no
	}
	if len(r.ports) > 0 && !r.matchPort(f.Port) {
		return no
	}
	if r.dests != 0 && r.dests&(1<<f.Destination) == 0 {
		return no
	}
	if r.services != nil {
		i := 0
		if f.Service != nil {
			i = f.Service.index
		}
		if !r.services.has(i) {
			return no
		}
	}
	if r.clients != nil {
		i := 0
		if f.Group != nil {
			i = f.Group.index
		}
		if !r.clients.has(i) {
			return no
		}
	}
	if r.countries != nil && !r.countries.has(f.Effective) {
		return no
	}
	if len(r.networks) > 0 && !r.matchNetwork(f.Addr) {
		return no
	}
	if (r.domainsAll != nil || r.domainsSub != nil) && !r.matchDomain(f.Host) {
		return no
	}
	if len(r.paths) > 0 && !r.matchPath(f.Path) {
		return no
	}
	if !r.bodyConds {
		return yes
	}
	return r.matchBody(&f.Body)
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (r *Rule) matchPort(p uint16) bool {
	for _, pr := range r.ports {
		if p >= pr[0] && p <= pr[1] {
			return true
		}
	}
	return false
}

func (r *Rule) matchNetwork(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	a = a.Unmap()
	for _, p := range r.networks {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (r *Rule) matchDomain(host string) bool {
	if _, ok := r.domainsAll[host]; ok {
		return true
	}
	for s := host; ; {
		i := strings.IndexByte(s, '.')
		if i < 0 {
			return false
		}
		s = s[i+1:]
		if _, ok := r.domainsAll[s]; ok {
			return true
		}
		if _, ok := r.domainsSub[s]; ok {
			return true
		}
	}
}

// CleanPath is the form of a URL path that rules match, undoing the
// spellings that servers treat as the same resource, so that a path rule
// cannot be sidestepped by spelling: the path is decoded (the caller passes
// url.URL.Path), "\" is "/" (IIS), ";parameters" are dropped from each
// segment (Tomcat, Jetty), and dot segments and repeated slashes are
// removed; a trailing slash is kept. Matching is also case-insensitive
// (IIS), see Rule paths.
func CleanPath(decoded string) string {
	if decoded == "" {
		return "/"
	}
	if strings.ContainsAny(decoded, "\\;") {
		decoded = strings.ReplaceAll(decoded, "\\", "/")
		if strings.IndexByte(decoded, ';') >= 0 {
			segs := strings.Split(decoded, "/")
			for i, seg := range segs {
				if j := strings.IndexByte(seg, ';'); j >= 0 {
					segs[i] = seg[:j]
				}
			}
			decoded = strings.Join(segs, "/")
		}
	}
	if decoded[0] != '/' {
		decoded = "/" + decoded
	}
	c := path.Clean(decoded)
	if strings.HasSuffix(decoded, "/") && c != "/" {
		c += "/"
	}
	return c
}

func (r *Rule) matchPath(path string) bool {
	if path == "" {
		return false // not visible: a tunnel
	}
	for _, p := range r.paths {
		if p.glob != nil {
			if p.glob.MatchString(path) {
				return true
			}
		} else if len(path) >= len(p.prefix) && strings.EqualFold(path[:len(p.prefix)], p.prefix) {
			return true
		}
	}
	return false
}

func (r *Rule) matchBody(b *Body) match {
	m := yes
	if r.upload != TriUnknown {
		m = boolMatch(b.Present == (r.upload == TriYes))
		if m == no {
			return no
		}
	}
	if r.minBody >= 0 {
		switch {
		case !b.Present:
			return no
		case b.Size >= r.minBody:
		case b.SizeExact:
			return no
		default:
			m = maybe
		}
	}
	if r.fileParts != TriUnknown {
		switch b.FileParts {
		case TriUnknown:
			m = and(m, maybe)
		case r.fileParts:
		default:
			return no
		}
	}
	if len(r.contentTypes) > 0 {
		m = and(m, r.matchContentTypes(b))
	}
	return m
}

func (r *Rule) matchContentTypes(b *Body) match {
	ct := b.ContentType
	if ct == "" && b.Present {
		ct = "application/octet-stream" // RFC 9110 §8.3: a body without a type may be taken as octets
	}
	if ct != "" && matchMediaTypes(r.contentTypes, ct) {
		return yes
	}
	for _, p := range b.PartTypes {
		if matchMediaTypes(r.contentTypes, p) {
			return yes
		}
	}
	if strings.HasPrefix(b.ContentType, "multipart/") && (!b.PartsComplete || b.Encoded) {
		return maybe
	}
	return no
}

// matchMediaTypes matches "type/subtype" against patterns "type/subtype",
// "type/*" and "*/*".
func matchMediaTypes(patterns []string, mt string) bool {
	slash := strings.IndexByte(mt, '/')
	for _, p := range patterns {
		switch {
		case p == "*/*":
			return true
		case strings.HasSuffix(p, "/*"):
			if slash >= 0 && mt[:slash] == p[:len(p)-2] {
				return true
			}
		case p == mt:
			return true
		}
	}
	return false
}

// containsMethod matches a request method against the rule's, which are
// upper case. Methods are case-sensitive (RFC 9110 §9.1), but a server may
// treat "Post" as POST, so a rule about POST must not be evaded by case.
func containsMethod(methods []string, m string) bool {
	if containsString(methods, m) {
		return true
	}
	for _, x := range methods {
		if strings.EqualFold(x, m) {
			return true
		}
	}
	return false
}

package rules

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// defaultRules are the rules in force when no rules file is configured:
// domestic = JP, uploads to any other or unknown country blocked, the rest
// allowed, foreign tunnels limited to 1 MiB of upload.
//
//go:embed default.yaml
var defaultRules []byte

// DefaultRulesName is the name of the embedded default rules in messages.
const DefaultRulesName = "(built-in default rules)"

// Source is one rules file's name (for messages) and contents.
type Source struct {
	Name string
	Data []byte
}

// DefaultSources returns the embedded default rules as a source list.
func DefaultSources() []Source {
	return []Source{{Name: DefaultRulesName, Data: defaultRules}}
}

type compiler struct {
	errs     ErrorList
	warnings ErrorList
	groups   map[string]countrySet // country groups: built-in and from files
}

func (c *compiler) errorf(file string, n *yaml.Node, format string, args ...any) {
	if len(c.errs) >= maxErrors {
		return
	}
	e := &Error{File: file, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	c.errs = append(c.errs, e)
}

func (c *compiler) warnf(file string, n *yaml.Node, format string, args ...any) {
	e := &Error{File: file, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Column = n.Line, n.Column
	}
	c.warnings = append(c.warnings, e)
}

// sortByPosition orders errors as an admin reads the files: the built-in
// catalog first, then the files in load order, each by line and column.
func sortByPosition(errs ErrorList, names []string) {
	order := map[string]int{BuiltinCatalogName: -1}
	for i, n := range names {
		order[n] = i
	}
	sort.SliceStable(errs, func(i, j int) bool {
		a, b := errs[i], errs[j]
		if order[a.File] != order[b.File] {
			return order[a.File] < order[b.File]
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
}

// country validates one country code; "" stays "".
func (c *compiler) country(file string, p pstr, what string) string {
	if p.V == "" {
		return ""
	}
	code := strings.ToUpper(p.V)
	if !ValidCountry(code) {
		c.errorf(file, p.N, "%s: %q is not an ISO 3166-1 alpha-2 country code (such as JP, KR, US)", what, p.V)
		return ""
	}
	return code
}

// countries reads a list of country codes and group names.
func (c *compiler) countries(file string, list []pstr, what string) countrySet {
	var set countrySet
	for _, p := range list {
		if g, ok := c.groups[p.V]; ok {
			for i := range set {
				set[i] |= g[i]
			}
			continue
		}
		code := strings.ToUpper(p.V)
		if len(p.V) == 2 && ValidCountry(code) {
			set.add(code)
			continue
		}
		c.errorf(file, p.N, "%s: %q is neither a country code (such as JP, KR, US) nor a country group (%s)",
			what, p.V, strings.Join(sortedKeys(c.groups), ", "))
	}
	return set
}

// Compile parses and compiles rules files into a Set, and runs the test
// cases they carry. Every error comes back at once, each with file:line; a
// failing test case is an error like any other, so a reload with failing
// tests is rejected.
func Compile(sources []Source) (*Set, error) {
	set, err := compile(sources)
	if err != nil {
		return nil, err
	}
	if fails := set.RunTests(); len(fails) > 0 {
		return nil, fails
	}
	return set, nil
}

func compile(sources []Source) (*Set, error) {
	if len(sources) == 0 {
		return nil, ErrorList{{File: "rules", Msg: "no rules files found"}}
	}
	var errs ErrorList
	files := make([]*wireFile, 0, len(sources))
	h := sha256.New()
	names := make([]string, 0, len(sources))
	for _, src := range sources {
		h.Write([]byte(src.Name))
		h.Write([]byte{0})
		h.Write(src.Data)
		h.Write([]byte{0})
		names = append(names, src.Name)
		w, e := parseFile(src.Name, src.Data, false)
		errs = append(errs, e...)
		if w != nil {
			files = append(files, w)
		}
	}
	if len(errs) > 0 {
		return nil, capErrors(errs)
	}

	c := &compiler{groups: map[string]countrySet{}}
	for name, members := range builtinCountryGroups {
		var s countrySet
		for _, m := range strings.Fields(members) {
			s.add(m)
		}
		c.groups[name] = s
	}
	set := &Set{
		sources:        names,
		hash:           hex.EncodeToString(h.Sum(nil)),
		defaultAction:  Allow,
		foreignBudget:  1 << 20,
		domesticBudget: Unlimited,
	}
	set.domestic.add("JP")

	// Settings that only one file may set.
	type setting struct {
		file string
		line int
	}
	settings := map[string]setting{}
	once := func(f *wireFile, key string, n *yaml.Node) bool {
		if n == nil {
			return false
		}
		if prev, ok := settings[key]; ok {
			c.errorf(f.file, n, "%q is already set in %s:%d; set it in one file only", key, prev.file, prev.line)
			return false
		}
		settings[key] = setting{f.file, n.Line}
		return true
	}

	useBuiltin := true
	for _, f := range files {
		// Country groups first: domestic and rules may name them.
		for _, g := range f.countryGroups {
			if len(g.name.V) < 3 || !groupNameRE.MatchString(g.name.V) {
				c.errorf(f.file, g.name.N, "country group name %q: use at least three letters, digits, '-' or '_', starting with a letter (two letters are country codes)", g.name.V)
				continue
			}
			if _, dup := c.groups[g.name.V]; dup {
				c.errorf(f.file, g.name.N, "country group %q is already defined", g.name.V)
				continue
			}
			c.groups[g.name.V] = c.countries(f.file, g.members, "country group "+g.name.V)
		}
		if f.builtin != nil && once(f, "builtin_catalog", f.builtinNode) {
			useBuiltin = *f.builtin
		}
	}
	for _, f := range files {
		if once(f, "domestic", f.domesticNode) {
			set.domestic = c.countries(f.file, f.domestic, "domestic")
		}
		if f.reportOnly != nil && once(f, "report_only", f.reportNode) {
			set.reportOnly = *f.reportOnly
		}
		if f.defaultAction.N != nil && once(f, "default", f.defaultAction.N) {
			a, ok := ParseAction(f.defaultAction.V)
			if !ok {
				c.errorf(f.file, f.defaultAction.N, "default: %q is not an action (allow, log or block)", f.defaultAction.V)
			}
			set.defaultAction = a
		}
		if f.budgetNode != nil && once(f, "tunnel_upload_budget", f.budgetNode) {
			if b, ok := f.budgets["foreign"]; ok {
				set.foreignBudget = b.v
			}
			if b, ok := f.budgets["domestic"]; ok {
				set.domesticBudget = b.v
			}
		}
	}

	var builtin *wireFile
	if useBuiltin {
		w, e := parsedBuiltinCatalog()
		if e != nil {
			return nil, e // a broken built-in catalog is a build bug; tests catch it
		}
		builtin = w
	}
	set.catalog = c.compileCatalog(builtin, files)

	groupIndex := map[string]*ClientGroup{}
	for _, f := range files {
		for _, wg := range f.clientGroups {
			g := &ClientGroup{Name: wg.name.V, Title: wg.title, index: len(set.groups) + 1}
			switch {
			case wg.name.V == "":
				c.errorf(f.file, wg.node, "a client group needs a name")
				continue
			case !nameRE.MatchString(wg.name.V):
				c.errorf(f.file, wg.name.N, "client group name %q: use lower-case letters, digits, '-' and '_' (it becomes a metric label)", wg.name.V)
				continue
			case wg.name.V == OtherGroup:
				c.errorf(f.file, wg.name.N, "%q is reserved for clients in no group", OtherGroup)
				continue
			case groupIndex[wg.name.V] != nil:
				c.errorf(f.file, wg.name.N, "client group %q is defined twice", wg.name.V)
				continue
			}
			if len(wg.networks) == 0 {
				c.errorf(f.file, wg.node, "client group %q has no networks", wg.name.V)
			}
			for _, n := range wg.networks {
				if p, ok := c.prefix(f.file, n, "client group "+wg.name.V); ok {
					g.Networks = append(g.Networks, p)
				}
			}
			groupIndex[g.Name] = g
			set.groups = append(set.groups, g)
		}
	}

	ruleNames := map[string]*Rule{}
	for _, f := range files {
		for i := range f.rules {
			r := c.compileRule(f.file, &f.rules[i], set, groupIndex, false)
			if r == nil {
				continue
			}
			if prev := ruleNames[r.Name]; prev != nil {
				c.errorf(f.file, f.rules[i].name.N, "rule %q is already defined at %s:%d", r.Name, prev.File, prev.Line)
				continue
			}
			ruleNames[r.Name] = r
			set.rules = append(set.rules, r)
			if r.minBody >= 0 || r.fileParts != TriUnknown || len(r.contentTypes) > 0 {
				set.needsBody = true
			}
		}
	}
	c.compileInspection(files, set, groupIndex)
	for _, f := range files {
		for i := range f.tests {
			if tc := c.compileTest(f.file, &f.tests[i], ruleNames); tc != nil {
				set.tests = append(set.tests, tc)
			}
		}
	}
	sortByPosition(c.warnings, names)
	for _, w := range c.warnings {
		set.warnings = append(set.warnings, w.Error())
	}
	if len(c.errs) > 0 {
		sortByPosition(c.errs, names)
		return nil, c.errs
	}
	return set, nil
}

// parsedBuiltinCatalog parses the embedded catalog once: it is most of the
// work of a compile, and the parsed form is never modified.
var parsedBuiltinCatalog = sync.OnceValues(func() (*wireFile, ErrorList) {
	return parseFile(BuiltinCatalogName, builtinCatalog, true)
})

func capErrors(errs ErrorList) ErrorList {
	if len(errs) > maxErrors {
		return errs[:maxErrors]
	}
	return errs
}

func (c *compiler) prefix(file string, p pstr, what string) (netip.Prefix, bool) {
	if strings.Contains(p.V, "/") {
		pf, err := netip.ParsePrefix(p.V)
		if err != nil {
			c.errorf(file, p.N, "%s: %q is not a network in CIDR form (such as 10.1.0.0/16 or 2001:db8::/32)", what, p.V)
			return netip.Prefix{}, false
		}
		if pf.Masked() != pf {
			c.errorf(file, p.N, "%s: %q has host bits set; did you mean %s?", what, p.V, pf.Masked())
			return netip.Prefix{}, false
		}
		if a := pf.Addr(); a.Is4In6() {
			// Addresses are matched unmapped (::ffff:10.1.2.3 is
			// 10.1.2.3), so an IPv4-mapped network is its IPv4 network.
			// (A masked prefix shorter than /96 is never IPv4-mapped.)
			return netip.PrefixFrom(a.Unmap(), pf.Bits()-96), true
		}
		return pf, true
	}
	a, err := netip.ParseAddr(p.V)
	if err != nil {
		c.errorf(file, p.N, "%s: %q is not an IP address or a network in CIDR form", what, p.V)
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), true
}

var (
	groupNameRE   = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`)
	methodRE      = regexp.MustCompile(`^[A-Z][A-Z-]*$`)
	mediaTypeRE   = regexp.MustCompile(`^(\*/\*|[a-z0-9][a-z0-9!#$&^_.+-]*/(\*|[a-z0-9][a-z0-9!#$&^_.+-]*))$`)
	destinationOf = map[string]uint8{
		"internal": 1 << Internal,
		"domestic": 1 << Domestic,
		"foreign":  1<<Foreign | 1<<Unknown, // unknown is foreign
		"unknown":  1 << Unknown,
	}
)

func (c *compiler) compileRule(file string, w *wireRule, set *Set, groups map[string]*ClientGroup, inspection bool) *Rule {
	if w.name.V == "" {
		c.errorf(file, w.node, "a rule needs a name (it is shown on the block page and in logs)")
		return nil
	}
	r := &Rule{
		Name:        w.name.V,
		File:        file,
		Line:        w.node.Line,
		Message:     w.message,
		Alternative: w.alternative,
		minBody:     -1,
	}
	switch {
	case r.Name == DefaultRuleName:
		c.errorf(file, w.name.N, "rule name %q is reserved for the default action", r.Name)
	case !nameRE.MatchString(r.Name):
		c.errorf(file, w.name.N, "rule name %q: use lower-case letters, digits, '-' and '_' (it becomes a metric label)", r.Name)
	}
	if inspection {
		// no action: an inspection rule says inspect or not
	} else if w.action.V == "" {
		c.errorf(file, w.node, "rule %q needs an action: allow, log or block", r.Name)
	} else if a, ok := ParseAction(w.action.V); ok {
		r.Action = a
	} else {
		c.errorf(file, w.action.N, "rule %q: action %q is not one of allow, log, block", r.Name, w.action.V)
	}
	if len(w.services) > 0 {
		r.services = newBitset(len(set.catalog.services) + 1)
		for _, s := range w.services {
			if s.V == OtherService {
				r.services.set(0)
				continue
			}
			svc := set.catalog.byName[s.V]
			if svc == nil {
				hint := ""
				if h := closest(s.V, serviceNames(set.catalog)); h != "" {
					hint = fmt.Sprintf("; did you mean %q?", h)
				}
				c.errorf(file, s.N, "rule %q: unknown service %q%s (define it under services:, or use %q for no service)", r.Name, s.V, hint, OtherService)
				continue
			}
			r.services.set(svc.index)
		}
	}
	for _, d := range w.domains {
		sub := strings.HasPrefix(d.V, "*.")
		host, err := NormalizeHost(strings.TrimPrefix(d.V, "*."))
		if err != nil || strings.ContainsAny(d.V[min(2, len(d.V)):], "*/") {
			c.errorf(file, d.N, "rule %q: domain %q: write example.com (itself and subdomains) or *.example.com (subdomains only)", r.Name, d.V)
			continue
		}
		if sub {
			if r.domainsSub == nil {
				r.domainsSub = map[string]struct{}{}
			}
			r.domainsSub[host] = struct{}{}
		} else {
			if r.domainsAll == nil {
				r.domainsAll = map[string]struct{}{}
			}
			r.domainsAll[host] = struct{}{}
		}
	}
	for _, n := range w.networks {
		if p, ok := c.prefix(file, n, "rule "+strconv.Quote(r.Name)+" networks"); ok {
			r.networks = append(r.networks, p)
		}
	}
	for _, d := range w.destinations {
		bits, ok := destinationOf[d.V]
		if !ok {
			c.errorf(file, d.N, "rule %q: destination %q is not one of domestic, foreign, unknown, internal", r.Name, d.V)
			continue
		}
		r.dests |= bits
	}
	if len(w.countries) > 0 {
		cs := c.countries(file, w.countries, "rule "+strconv.Quote(r.Name)+" countries")
		r.countries = &cs
	}
	if len(w.clients) > 0 {
		r.clients = newBitset(len(set.groups) + 1)
		for _, g := range w.clients {
			if g.V == OtherGroup {
				r.clients.set(0)
				continue
			}
			cg := groups[g.V]
			if cg == nil {
				c.errorf(file, g.N, "rule %q: unknown client group %q (define it under client_groups:, or use %q for clients in no group)", r.Name, g.V, OtherGroup)
				continue
			}
			r.clients.set(cg.index)
		}
	}
	for _, m := range w.methods {
		up := strings.ToUpper(m.V)
		if !methodRE.MatchString(up) {
			c.errorf(file, m.N, "rule %q: %q is not an HTTP method", r.Name, m.V)
			continue
		}
		r.methods = append(r.methods, up)
	}
	for _, p := range w.ports {
		lo, hi, ok := parsePortRange(p.V)
		if !ok {
			c.errorf(file, p.N, "rule %q: port %q: use a number such as 443 or a range such as 8000-8999", r.Name, p.V)
			continue
		}
		r.ports = append(r.ports, [2]uint16{lo, hi})
	}
	for _, p := range w.paths {
		if !strings.HasPrefix(p.V, "/") {
			c.errorf(file, p.N, "rule %q: path %q must start with /", r.Name, p.V)
			continue
		}
		if strings.ContainsAny(p.V, "*?") {
			r.paths = append(r.paths, pathPattern{glob: globRegexp(p.V)})
		} else {
			r.paths = append(r.paths, pathPattern{prefix: p.V})
		}
	}
	if w.upload != nil {
		r.upload = TriOf(*w.upload)
	}
	if w.minBody != nil {
		r.minBody = *w.minBody
	}
	if w.fileParts != nil {
		r.fileParts = TriOf(*w.fileParts)
	}
	for _, ct := range w.contentTypes {
		v := strings.ToLower(ct.V)
		if !mediaTypeRE.MatchString(v) {
			c.errorf(file, ct.N, "rule %q: content type %q: use type/subtype, type/* or */* (such as image/*)", r.Name, ct.V)
			continue
		}
		r.contentTypes = append(r.contentTypes, v)
	}
	r.bodyConds = r.upload != TriUnknown || r.minBody >= 0 || r.fileParts != TriUnknown || len(r.contentTypes) > 0
	if w.budget != nil {
		r.Budget, r.HasBudget = w.budget.v, true
	}
	if r.HasBudget && r.bodyConds {
		c.errorf(file, w.budget.n, "rule %q: upload_budget applies to tunnels and WebSockets, but this rule's body conditions (upload, min_body_bytes, file_parts, content_types) never match those; split it into two rules", r.Name)
	}
	return r
}

func serviceNames(c *Catalog) []string {
	out := make([]string, len(c.services))
	for i, s := range c.services {
		out[i] = s.Name
	}
	return out
}

func parsePortRange(s string) (uint16, uint16, bool) {
	lo, hi, isRange := strings.Cut(s, "-")
	a, err := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	if err != nil || a == 0 {
		return 0, 0, false
	}
	if !isRange {
		return uint16(a), uint16(a), true
	}
	b, err := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if err != nil || b < a {
		return 0, 0, false
	}
	return uint16(a), uint16(b), true
}

// globRegexp compiles a path glob to an anchored RE2 expression, so that
// matching attacker-chosen paths takes linear time: "*" and "?" stay within
// a segment, "**" crosses segments.
func globRegexp(glob string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString("(?i)^") // paths match case-insensitively (see CleanPath)
	rs := []rune(glob)
	for i := 0; i < len(rs); i++ {
		switch c := rs[i]; c {
		case '*':
			if i+1 < len(rs) && rs[i+1] == '*' {
				b.WriteString(".*")
				i++
			} else {
				b.WriteString("[^/]*")
			}
		case '?':
			b.WriteString("[^/]")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}

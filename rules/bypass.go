package rules

import (
	_ "embed"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// builtinBypass is the list of destinations that TLS interception leaves
// alone unless a rules file says otherwise: certificate-pinned apps break
// behind interception, and banking, health and some government traffic must
// not be read. See the header of bypass.yaml.
//
//go:embed bypass.yaml
var builtinBypass []byte

// BuiltinBypassName names the built-in bypass list in messages.
const BuiltinBypassName = "(built-in bypass list)"

// BypassEntry is one group of destinations never intercepted.
type BypassEntry struct {
	Name     string
	Category string // pinned, banking, health, updates, government, security
	Reason   string
	Domains  []string
}

var bypassCategories = []string{"pinned", "banking", "health", "updates", "government", "security"}

// parsedBypass parses and checks the embedded list once.
var parsedBypass = sync.OnceValues(func() ([]*BypassEntry, error) {
	return parseBypass(BuiltinBypassName, builtinBypass)
})

func parseBypass(name string, data []byte) ([]*BypassEntry, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(name, err)
	}
	d := &decoder{file: name}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	var out []*BypassEntry
	seenName := map[string]bool{}
	seenDomain := map[string]string{}
	d.fields(doc, "the bypass list", []string{"version", "bypass"}, func(key string, _, v *yaml.Node) {
		if key != "bypass" {
			return
		}
		d.list(v, "bypass", func(item *yaml.Node) {
			e := &BypassEntry{}
			var doms []pstr
			d.fields(item, "a bypass entry", []string{"name", "category", "reason", "domains"}, func(key string, _, v *yaml.Node) {
				switch key {
				case "name":
					p, _ := d.str(v, "name")
					e.Name = p.V
					if !nameRE.MatchString(p.V) || seenName[p.V] {
						d.errorf(v, "bypass entry name %q is invalid or used twice", p.V)
					}
					seenName[p.V] = true
				case "category":
					p, _ := d.str(v, "category")
					e.Category = p.V
					if !contains(bypassCategories, p.V) {
						d.errorf(v, "bypass category %q is not one of %s", p.V, strings.Join(bypassCategories, ", "))
					}
				case "reason":
					p, _ := d.str(v, "reason")
					e.Reason = p.V
				case "domains":
					doms = d.strList(v, "domains")
				}
			})
			for _, dom := range doms {
				host, err := NormalizeHost(dom.V)
				if err != nil || strings.ContainsAny(dom.V, "*/ ") {
					d.errorf(dom.N, "bypass %q: domain %q is not a plain domain", e.Name, dom.V)
					continue
				}
				if prev, dup := seenDomain[host]; dup {
					d.errorf(dom.N, "bypass %q: domain %q is already listed under %q", e.Name, host, prev)
					continue
				}
				seenDomain[host] = e.Name
				e.Domains = append(e.Domains, host)
			}
			out = append(out, e)
		})
	})
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	return out, nil
}

// Inspection is how a CONNECT's TLS is handled: opened (inspected) so that
// every request inside is decided like plain HTTP, or tunnelled with an
// upload budget.
type Inspection struct {
	Inspect bool
	// Rule names what decided: an inspection rule's name, "bypass:<entry>"
	// for the built-in bypass list, or "default".
	Rule string
	// Bypass is the built-in entry that matched, if any.
	Bypass *BypassEntry
}

// Inspect decides whether a CONNECT to the prepared facts' destination is
// opened: the built-in bypass list first (minus the entries a rules file
// exempts), then the inspection rules in order, then the default. It does
// not allocate.
func (s *Set) Inspect(f *Facts) Inspection {
	if len(s.bypass) > 0 && !isIPLiteral(f.Host) {
		for h := f.Host; ; {
			if e, ok := s.bypass[h]; ok {
				return Inspection{Inspect: false, Rule: e.ruleName, Bypass: e.entry}
			}
			i := strings.IndexByte(h, '.')
			if i < 0 {
				break
			}
			h = h[i+1:]
		}
	}
	for _, r := range s.inspectRules {
		if r.match(s, f) == yes {
			return Inspection{Inspect: r.Inspect, Rule: r.Name}
		}
	}
	return Inspection{Inspect: s.inspectDefault, Rule: DefaultRuleName}
}

type bypassMatch struct {
	entry    *BypassEntry
	ruleName string
}

// compileInspection reads the "inspection:" sections (at most one file may
// have one).
func (c *compiler) compileInspection(files []*wireFile, set *Set, groups map[string]*ClientGroup) {
	var w *wireInspection
	var file string
	for _, f := range files {
		if f.inspection == nil {
			continue
		}
		if w != nil {
			c.errorf(f.file, f.inspection.node, "\"inspection\" is already set in %s:%d; set it in one file only", file, w.node.Line)
			continue
		}
		w, file = f.inspection, f.file
	}
	useBuiltin := true
	except := map[string]bool{}
	if w != nil {
		if w.defaultInspect != nil {
			set.inspectDefault = *w.defaultInspect
		}
		if w.builtinBypass != nil {
			useBuiltin = *w.builtinBypass
		}
		for i := range w.rules {
			wr := &w.rules[i]
			if wr.inspect == nil {
				c.errorf(file, wr.node, "inspection rule %q needs inspect: true or false", wr.name.V)
				continue
			}
			r := c.compileRule(file, wr, set, groups, true)
			if r == nil {
				continue
			}
			r.Inspect = *wr.inspect
			set.inspectRules = append(set.inspectRules, r)
		}
	}
	if !useBuiltin {
		return
	}
	entries, err := parsedBypass()
	if err != nil {
		c.errorf(BuiltinBypassName, nil, "%v", err)
		return
	}
	if w != nil {
		known := map[string]bool{}
		for _, e := range entries {
			known[e.Name] = true
		}
		for _, p := range w.bypassExcept {
			if !known[p.V] {
				c.errorf(file, p.N, "bypass_except: %q is not an entry of the built-in bypass list", p.V)
			}
			except[p.V] = true
		}
	}
	set.bypass = map[string]bypassMatch{}
	for _, e := range entries {
		if except[e.Name] {
			continue
		}
		for _, d := range e.Domains {
			set.bypass[d] = bypassMatch{entry: e, ruleName: "bypass:" + e.Name}
		}
	}
}

// BuiltinBypass lists the built-in bypass entries (for docs and explain).
func BuiltinBypass() ([]*BypassEntry, error) { return parsedBypass() }

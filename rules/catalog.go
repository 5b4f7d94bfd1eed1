package rules

import (
	_ "embed"
	"net/netip"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// builtinCatalog is the service catalog every rules file starts from unless
// it says "builtin_catalog: false". It is data, reviewed like code: see the
// header of catalog.yaml.
//
//go:embed catalog.yaml
var builtinCatalog []byte

// BuiltinCatalogName is the name the built-in catalog has in error messages.
const BuiltinCatalogName = "(built-in catalog)"

// Service is one SaaS or platform that a destination host can belong to.
type Service struct {
	Name            string // id used in rules, logs and metric labels
	Title           string // display name, shown on the block page
	Category        string
	OperatorCountry string // informational: home country of the operator
	// StorageCountry is the declared country where the service stores
	// data, "" when none is declared. A declared foreign country makes
	// uploads foreign even when the address dialed is domestic.
	StorageCountry string
	Domains        []string
	Endpoints      []*Endpoint
	Notes          string
	Builtin        bool // from the built-in catalog, not overridden
	index          int  // 1-based position in the catalog; 0 is "other"
}

// Endpoint is a part of a service with its own facts, such as a media
// upload host whose storage is elsewhere than the rest of the service.
type Endpoint struct {
	Name           string
	Service        *Service
	Domains        []string
	StorageCountry string
}

// DisplayName is the title, or the name when there is no title.
func (s *Service) DisplayName() string {
	if s.Title != "" {
		return s.Title
	}
	return s.Name
}

type domainEntry struct {
	svc *Service
	ep  *Endpoint
}

// Catalog maps hosts to services by domain suffix.
type Catalog struct {
	services []*Service
	byName   map[string]*Service
	byDomain map[string]domainEntry
}

// Lookup finds the service (and endpoint) of a normalised host by its
// longest listed domain suffix: "a.b.example.com" tries a.b.example.com,
// b.example.com, example.com, com. IP literals belong to no service.
// It does not allocate.
func (c *Catalog) Lookup(host string) (*Service, *Endpoint) {
	if c == nil || len(c.byDomain) == 0 || isIPLiteral(host) {
		return nil, nil
	}
	s := host
	for {
		if e, ok := c.byDomain[s]; ok {
			return e.svc, e.ep
		}
		i := strings.IndexByte(s, '.')
		if i < 0 {
			return nil, nil
		}
		s = s[i+1:]
	}
}

// Services lists the catalog in the order it was defined.
func (c *Catalog) Services() []*Service { return c.services }

// Service returns the service with the given name, or nil.
func (c *Catalog) Service(name string) *Service { return c.byName[name] }

func isIPLiteral(h string) bool {
	if strings.IndexByte(h, ':') >= 0 {
		return true
	}
	// A normalised IPv4 literal is a dotted quad of digits.
	if h == "" || h[len(h)-1] < '0' || h[len(h)-1] > '9' {
		return false
	}
	_, err := netip.ParseAddr(h)
	return err == nil
}

var categories = []string{
	"chat", "video", "storage", "office", "ai", "translation", "dev", "transfer",
	"email", "sns", "cloud-storage", "groupware", "other",
}

// domainOwner remembers where a domain was claimed, for collision errors.
type domainOwner struct {
	svc  string
	file string
	line int
	node *yaml.Node
}

// compileCatalog merges the built-in catalog (when used) with the services
// of the rules files. A file's service with the name of a built-in service
// replaces it; a file's service may claim a domain from a built-in service
// (the file wins, and a warning says so); within the built-in catalog or
// across the files, a name or domain used twice is an error.
func (c *compiler) compileCatalog(builtin *wireFile, files []*wireFile) *Catalog {
	cat := &Catalog{byName: map[string]*Service{}, byDomain: map[string]domainEntry{}}
	type origin struct {
		w    wireService
		file string
	}
	var order []string
	chosen := map[string]origin{}
	fromFile := map[string]bool{}
	if builtin != nil {
		for _, s := range builtin.services {
			if _, dup := chosen[s.name.V]; dup {
				c.errorf(builtin.file, s.name.N, "service %q is defined twice", s.name.V)
				continue
			}
			chosen[s.name.V] = origin{s, builtin.file}
			order = append(order, s.name.V)
		}
	}
	for _, f := range files {
		for _, s := range f.services {
			if s.name.V == "" {
				c.errorf(f.file, s.node, "a service needs a name")
				continue
			}
			if fromFile[s.name.V] {
				c.errorf(f.file, s.name.N, "service %q is defined twice in the rules files", s.name.V)
				continue
			}
			if _, ok := chosen[s.name.V]; !ok {
				order = append(order, s.name.V)
			}
			fromFile[s.name.V] = true
			chosen[s.name.V] = origin{s, f.file}
		}
	}

	owners := map[string]domainOwner{}
	claim := func(file string, d pstr, svc *Service, ep *Endpoint) {
		if strings.ContainsAny(d.V, "*/ ") {
			c.errorf(file, d.N, "service %q: domain %q: write a plain domain; it matches itself and every subdomain", svc.Name, d.V)
			return
		}
		host, err := NormalizeHost(d.V)
		if err != nil {
			c.errorf(file, d.N, "service %q: %v", svc.Name, err)
			return
		}
		if isIPLiteral(host) {
			c.errorf(file, d.N, "service %q: %q is an IP address; services are matched by domain name", svc.Name, d.V)
			return
		}
		if prev, taken := owners[host]; taken {
			prevBuiltin := prev.file == BuiltinCatalogName
			switch {
			case !prevBuiltin && file == BuiltinCatalogName:
				// A file's service that overrides a built-in service
				// coming earlier in the catalog has already claimed this
				// built-in domain: the file wins here too.
				c.warnf(prev.file, prev.node, "domain %q moves from built-in service %q to %q", host, svc.Name, prev.svc)
				return
			case prevBuiltin && file != BuiltinCatalogName && prev.svc != svc.Name:
				c.warnf(file, d.N, "domain %q moves from built-in service %q to %q", host, prev.svc, svc.Name)
				if old := cat.byName[prev.svc]; old != nil {
					old.Domains = removeString(old.Domains, host)
					for _, e := range old.Endpoints {
						e.Domains = removeString(e.Domains, host)
					}
				}
			default:
				c.errorf(file, d.N, "domain %q is already listed for service %q (%s:%d)", host, prev.svc, prev.file, prev.line)
				return
			}
		}
		owners[host] = domainOwner{svc: svc.Name, file: file, line: d.N.Line, node: d.N}
		cat.byDomain[host] = domainEntry{svc: svc, ep: ep}
		if ep != nil {
			ep.Domains = append(ep.Domains, host)
		} else {
			svc.Domains = append(svc.Domains, host)
		}
	}

	for _, name := range order {
		o := chosen[name]
		w := o.w
		if !nameRE.MatchString(name) {
			c.errorf(o.file, w.name.N, "service name %q: use lower-case letters, digits, '-' and '_' (it becomes a metric label)", name)
			continue
		}
		if name == OtherService {
			c.errorf(o.file, w.name.N, "%q is reserved for traffic that matches no service", OtherService)
			continue
		}
		svc := &Service{
			Name:    name,
			Title:   w.title,
			Notes:   w.notes,
			Builtin: o.file == BuiltinCatalogName,
			index:   len(cat.services) + 1,
		}
		if w.category.V != "" {
			if !contains(categories, w.category.V) {
				c.errorf(o.file, w.category.N, "service %q: unknown category %q (one of: %s)", name, w.category.V, strings.Join(categories, ", "))
			}
			svc.Category = w.category.V
		}
		svc.OperatorCountry = c.country(o.file, w.operator, "operator_country")
		svc.StorageCountry = c.country(o.file, w.storage, "storage_country")
		if len(w.domains) == 0 && len(w.endpoints) == 0 {
			c.errorf(o.file, w.node, "service %q has no domains", name)
		}
		cat.services = append(cat.services, svc)
		cat.byName[name] = svc
		for _, d := range w.domains {
			claim(o.file, d, svc, nil)
		}
		for _, we := range w.endpoints {
			ep := &Endpoint{Name: we.name.V, Service: svc}
			if ep.Name == "" {
				c.errorf(o.file, we.node, "service %q: an endpoint needs a name", name)
			}
			ep.StorageCountry = c.country(o.file, we.storage, "storage_country")
			if len(we.domains) == 0 {
				c.errorf(o.file, we.node, "service %q: endpoint %q has no domains", name, ep.Name)
			}
			svc.Endpoints = append(svc.Endpoints, ep)
			for _, d := range we.domains {
				claim(o.file, d, svc, ep)
			}
		}
	}
	for _, s := range cat.services {
		sort.Strings(s.Domains)
	}
	return cat
}

func removeString(list []string, s string) []string {
	out := list[:0]
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

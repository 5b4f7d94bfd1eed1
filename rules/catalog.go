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

	fromBuiltin bool // defined by the built-in catalog
	replaced    bool // a file's endpoint of the same name replaced it
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
// of the rules files.
//
// A file's service with the name of a built-in service extends it: its
// domains and endpoints are added (an endpoint of the same name replaces
// the built-in one), and the facts it sets (title, category, countries,
// notes) override the built-in ones. So declaring where LINE keeps its
// media takes three lines, not a copy of LINE's domains. A file's service
// may also claim a domain from another built-in service: the file wins and
// a warning says so. Within the built-in catalog or across the files, a
// name or domain used twice is an error.
func (c *compiler) compileCatalog(builtin *wireFile, files []*wireFile) *Catalog {
	cat := &Catalog{byName: map[string]*Service{}, byDomain: map[string]domainEntry{}}
	type source struct {
		w    wireService
		file string
	}
	type merged struct {
		builtin *source
		file    *source
	}
	var order []string
	byName := map[string]*merged{}
	if builtin != nil {
		for _, s := range builtin.services {
			if _, dup := byName[s.name.V]; dup {
				c.errorf(builtin.file, s.name.N, "service %q is defined twice", s.name.V)
				continue
			}
			byName[s.name.V] = &merged{builtin: &source{s, builtin.file}}
			order = append(order, s.name.V)
		}
	}
	for _, f := range files {
		for _, s := range f.services {
			if s.name.V == "" {
				c.errorf(f.file, s.node, "a service needs a name")
				continue
			}
			m := byName[s.name.V]
			switch {
			case m == nil:
				m = &merged{}
				byName[s.name.V] = m
				order = append(order, s.name.V)
			case m.file != nil:
				c.errorf(f.file, s.name.N, "service %q is already defined at %s:%d", s.name.V, m.file.file, m.file.w.name.N.Line)
				continue
			}
			m.file = &source{s, f.file}
		}
	}

	// Build the services, then claim domains: the files' first, then the
	// built-in catalog's, so that a file's claim always wins.
	type claimJob struct {
		file string
		d    pstr
		svc  *Service
		ep   *Endpoint
	}
	var fileClaims, builtinClaims []claimJob
	for _, name := range order {
		m := byName[name]
		primary := m.file
		if primary == nil {
			primary = m.builtin
		}
		if !nameRE.MatchString(name) {
			c.errorf(primary.file, primary.w.name.N, "service name %q: use lower-case letters, digits, '-' and '_' (it becomes a metric label)", name)
			continue
		}
		if name == OtherService {
			c.errorf(primary.file, primary.w.name.N, "%q is reserved for traffic that matches no service", OtherService)
			continue
		}
		svc := &Service{Name: name, Builtin: m.file == nil, index: len(cat.services) + 1}
		endpoints := map[string]*Endpoint{}
		nClaims := len(fileClaims) + len(builtinClaims)
		for _, src := range []*source{m.builtin, m.file} {
			if src == nil {
				continue
			}
			w := src.w
			if w.title != "" {
				svc.Title = w.title
			}
			if w.notes != "" {
				svc.Notes = w.notes
			}
			if w.category.V != "" {
				if !contains(categories, w.category.V) {
					c.errorf(src.file, w.category.N, "service %q: unknown category %q (one of: %s)", name, w.category.V, strings.Join(categories, ", "))
				}
				svc.Category = w.category.V
			}
			if w.operator.V != "" {
				svc.OperatorCountry = c.country(src.file, w.operator, "operator_country")
			}
			if w.storage.V != "" {
				svc.StorageCountry = c.country(src.file, w.storage, "storage_country")
			}
			claims := &builtinClaims
			if src == m.file {
				claims = &fileClaims
			}
			for _, d := range w.domains {
				*claims = append(*claims, claimJob{src.file, d, svc, nil})
			}
			for _, we := range w.endpoints {
				if we.name.V == "" {
					c.errorf(src.file, we.node, "service %q: an endpoint needs a name", name)
				}
				if len(we.domains) == 0 {
					c.errorf(src.file, we.node, "service %q: endpoint %q has no domains", name, we.name.V)
				}
				ep := endpoints[we.name.V]
				if ep == nil || src == m.file && ep.fromBuiltin {
					// A file's endpoint of the same name replaces the
					// built-in one (its built-in domains fall back to
					// the service when the file does not claim them).
					if ep != nil {
						ep.replaced = true
					}
					ep = &Endpoint{Name: we.name.V, Service: svc, fromBuiltin: src == m.builtin}
					endpoints[we.name.V] = ep
					svc.Endpoints = append(svc.Endpoints, ep)
				} else if src == m.file {
					c.errorf(src.file, we.name.N, "service %q: endpoint %q is defined twice", name, we.name.V)
				}
				ep.StorageCountry = c.country(src.file, we.storage, "storage_country")
				for _, d := range we.domains {
					*claims = append(*claims, claimJob{src.file, d, svc, ep})
				}
			}
		}
		kept := svc.Endpoints[:0]
		for _, ep := range svc.Endpoints {
			if !ep.replaced {
				kept = append(kept, ep)
			}
		}
		svc.Endpoints = kept
		if len(fileClaims)+len(builtinClaims) == nClaims {
			c.errorf(primary.file, primary.w.node, "service %q has no domains", name)
		}
		cat.services = append(cat.services, svc)
		cat.byName[name] = svc
	}

	owners := map[string]domainOwner{}
	claim := func(j claimJob) {
		file, d, svc, ep := j.file, j.d, j.svc, j.ep
		if ep != nil && ep.replaced {
			ep = nil // a replaced built-in endpoint's domains stay with the service
		}
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
			switch {
			case prev.file != BuiltinCatalogName && file == BuiltinCatalogName:
				if prev.svc != svc.Name {
					c.warnf(prev.file, prev.node, "domain %q moves from built-in service %q to %q", host, svc.Name, prev.svc)
				}
				return // the file's claim stands
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
	for _, j := range fileClaims {
		claim(j)
	}
	for _, j := range builtinClaims {
		claim(j)
	}
	for _, s := range cat.services {
		sort.Strings(s.Domains)
		for _, e := range s.Endpoints {
			sort.Strings(e.Domains)
		}
	}
	return cat
}

package rules

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// SchemaVersion is the only rules file version this build reads. Requiring
// it lets a future format change fail loudly instead of being half-understood.
const SchemaVersion = 1

// wireFile is one decoded rules file, before compilation. Every value keeps
// its node so that the compiler can report file:line for semantic errors.
type wireFile struct {
	file string

	version       *yaml.Node
	domestic      []pstr
	domesticNode  *yaml.Node
	reportOnly    *bool
	reportNode    *yaml.Node
	defaultAction pstr
	budgets       map[string]budgetValue // "foreign", "domestic"
	budgetNode    *yaml.Node
	countryGroups []wireCountryGroup
	clientGroups  []wireClientGroup
	builtin       *bool
	builtinNode   *yaml.Node
	services      []wireService
	rules         []wireRule
	tests         []wireTest
	inspection    *wireInspection
}

// wireInspection is the "inspection:" section: where TLS is opened.
type wireInspection struct {
	node           *yaml.Node
	defaultInspect *bool
	builtinBypass  *bool
	bypassExcept   []pstr
	rules          []wireRule
}

type budgetValue struct {
	v int64
	n *yaml.Node
}

type wireCountryGroup struct {
	name    pstr
	members []pstr
}

type wireClientGroup struct {
	name     pstr
	title    string
	networks []pstr
	node     *yaml.Node
}

type wireEndpoint struct {
	name    pstr
	domains []pstr
	storage pstr
	node    *yaml.Node
}

type wireService struct {
	name      pstr
	title     string
	category  pstr
	operator  pstr
	storage   pstr
	domains   []pstr
	endpoints []wireEndpoint
	notes     string
	node      *yaml.Node
}

type wireRule struct {
	name         pstr
	action       pstr
	services     []pstr
	domains      []pstr
	networks     []pstr
	destinations []pstr
	countries    []pstr
	clients      []pstr
	methods      []pstr
	ports        []pstr
	paths        []pstr
	upload       *bool
	minBody      *int64
	minBodyNode  *yaml.Node
	fileParts    *bool
	contentTypes []pstr
	budget       *budgetValue
	message      string
	alternative  string
	inspect      *bool
	node         *yaml.Node
}

type wireTest struct {
	name        pstr
	request     pstr
	client      pstr
	country     pstr
	bodyBytes   *int64
	contentType pstr
	fileParts   *bool
	partTypes   []pstr
	encoded     *bool
	expect      pstr
	rule        pstr
	budget      *budgetValue
	inspect     *bool
	node        *yaml.Node
}

var (
	topFields = []string{
		"version", "domestic", "report_only", "default", "tunnel_upload_budget",
		"country_groups", "client_groups", "builtin_catalog", "services", "rules", "tests", "inspection",
	}
	inspectionFields     = []string{"default", "builtin_bypass", "bypass_except", "rules"}
	inspectionRuleFields = []string{
		"name", "inspect", "services", "domains", "networks", "destinations", "countries", "clients", "ports",
	}
	catalogFields  = []string{"version", "services"}
	serviceFields  = []string{"name", "title", "category", "operator_country", "storage_country", "domains", "endpoints", "notes"}
	endpointFields = []string{"name", "domains", "storage_country"}
	clientFields   = []string{"name", "title", "networks"}
	budgetFields   = []string{"foreign", "domestic"}
	ruleFields     = []string{
		"name", "action", "services", "domains", "networks", "destinations", "countries", "clients",
		"methods", "ports", "paths", "upload", "min_body_bytes", "file_parts", "content_types",
		"upload_budget", "message", "alternative",
	}
	testFields = []string{
		"name", "request", "client", "country", "body_bytes", "content_type", "file_parts",
		"part_types", "content_encoded", "expect", "rule", "budget", "inspect",
	}
)

// nameRE is the shape of every name that can end up in a metric label or a
// log field: services, rules, client groups.
var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// parseFile decodes one rules (or catalog) file. catalogOnly restricts the
// top level to the catalog's fields.
func parseFile(name string, data []byte, catalogOnly bool) (*wireFile, ErrorList) {
	d := &decoder{file: name}
	w := &wireFile{file: name}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			d.errorf(nil, "the file is empty; a rules file starts with \"version: %d\"", SchemaVersion)
			return nil, d.errs
		}
		d.errs = append(d.errs, yamlError(name, err))
		return nil, d.errs
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		d.errorf(&extra, "a rules file holds one YAML document; remove the \"---\" and what follows, or split it into another file")
	} else if !errors.Is(err, io.EOF) {
		d.errs = append(d.errs, yamlError(name, err))
	}
	doc := &root
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		doc = doc.Content[0]
	}
	known := topFields
	if catalogOnly {
		known = catalogFields
	}
	d.fields(doc, "the top level", known, func(key string, k, v *yaml.Node) {
		switch key {
		case "version":
			w.version = k
			if n, ok := d.integer(v, "version"); ok && n != SchemaVersion {
				d.errorf(v, "version %d is not supported by this sekisho; use version: %d", n, SchemaVersion)
			}
		case "domestic":
			w.domestic, w.domesticNode = d.strList(v, "domestic"), k
		case "report_only":
			if b, ok := d.boolean(v, "report_only"); ok {
				w.reportOnly, w.reportNode = &b, k
			}
		case "default":
			w.defaultAction, _ = d.str(v, "default")
		case "tunnel_upload_budget":
			w.budgetNode = k
			w.budgets = map[string]budgetValue{}
			d.fields(v, "tunnel_upload_budget", budgetFields, func(key string, _, v *yaml.Node) {
				if n, ok := d.size(v, "tunnel_upload_budget."+key, true); ok {
					w.budgets[key] = budgetValue{n, v}
				}
			})
		case "country_groups":
			m := resolve(v)
			if m.Kind != yaml.MappingNode {
				d.errorf(m, "country_groups must be a mapping of group name to a list of countries, not %s", kindName(m))
			} else {
				for i := 0; i+1 < len(m.Content); i += 2 {
					name, ok := d.str(m.Content[i], "country group name")
					if !ok {
						continue
					}
					w.countryGroups = append(w.countryGroups, wireCountryGroup{name: name, members: d.strList(m.Content[i+1], "country group "+name.V)})
				}
			}
		case "client_groups":
			d.list(v, "client_groups", func(item *yaml.Node) {
				g := wireClientGroup{node: item}
				d.fields(item, "a client group", clientFields, func(key string, _, v *yaml.Node) {
					switch key {
					case "name":
						g.name, _ = d.str(v, "client group name")
					case "title":
						s, _ := d.str(v, "client group title")
						g.title = s.V
					case "networks":
						g.networks = d.strList(v, "client group networks")
					}
				})
				w.clientGroups = append(w.clientGroups, g)
			})
		case "builtin_catalog":
			if b, ok := d.boolean(v, "builtin_catalog"); ok {
				w.builtin, w.builtinNode = &b, k
			}
		case "services":
			d.list(v, "services", func(item *yaml.Node) { w.services = append(w.services, d.service(item)) })
		case "rules":
			d.list(v, "rules", func(item *yaml.Node) { w.rules = append(w.rules, d.rule(item)) })
		case "tests":
			d.list(v, "tests", func(item *yaml.Node) { w.tests = append(w.tests, d.test(item)) })
		case "inspection":
			w.inspection = d.inspection(k, v)
		}
	})
	if w.version == nil && len(d.errs) == 0 {
		d.errorf(doc, "missing \"version: %d\" at the top of the file", SchemaVersion)
	}
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	return w, nil
}

func (d *decoder) service(n *yaml.Node) wireService {
	s := wireService{node: n}
	d.fields(n, "a service", serviceFields, func(key string, _, v *yaml.Node) {
		switch key {
		case "name":
			s.name, _ = d.str(v, "service name")
		case "title":
			t, _ := d.str(v, "service title")
			s.title = t.V
		case "category":
			s.category, _ = d.str(v, "service category")
		case "operator_country":
			s.operator, _ = d.str(v, "operator_country")
		case "storage_country":
			s.storage, _ = d.str(v, "storage_country")
		case "domains":
			s.domains = d.strList(v, "service domains")
		case "notes":
			t, _ := d.str(v, "service notes")
			s.notes = t.V
		case "endpoints":
			d.list(v, "endpoints", func(item *yaml.Node) {
				e := wireEndpoint{node: item}
				d.fields(item, "an endpoint", endpointFields, func(key string, _, v *yaml.Node) {
					switch key {
					case "name":
						e.name, _ = d.str(v, "endpoint name")
					case "domains":
						e.domains = d.strList(v, "endpoint domains")
					case "storage_country":
						e.storage, _ = d.str(v, "storage_country")
					}
				})
				s.endpoints = append(s.endpoints, e)
			})
		}
	})
	return s
}

func (d *decoder) inspection(k, n *yaml.Node) *wireInspection {
	in := &wireInspection{node: k}
	d.fields(n, "inspection", inspectionFields, func(key string, _, v *yaml.Node) {
		switch key {
		case "default":
			if b, ok := d.boolean(v, "inspection default"); ok {
				in.defaultInspect = &b
			}
		case "builtin_bypass":
			if b, ok := d.boolean(v, "builtin_bypass"); ok {
				in.builtinBypass = &b
			}
		case "bypass_except":
			in.bypassExcept = d.strList(v, "bypass_except")
		case "rules":
			d.list(v, "inspection rules", func(item *yaml.Node) {
				in.rules = append(in.rules, d.ruleWith(item, "an inspection rule", inspectionRuleFields))
			})
		}
	})
	return in
}

func (d *decoder) rule(n *yaml.Node) wireRule {
	return d.ruleWith(n, "a rule", ruleFields)
}

func (d *decoder) ruleWith(n *yaml.Node, what string, known []string) wireRule {
	r := wireRule{node: n}
	d.fields(n, what, known, func(key string, _, v *yaml.Node) {
		switch key {
		case "inspect":
			if b, ok := d.boolean(v, "inspect"); ok {
				r.inspect = &b
			}
		case "name":
			r.name, _ = d.str(v, "rule name")
		case "action":
			r.action, _ = d.str(v, "action")
		case "services":
			r.services = d.strList(v, "services")
		case "domains":
			r.domains = d.strList(v, "domains")
		case "networks":
			r.networks = d.strList(v, "networks")
		case "destinations":
			r.destinations = d.strList(v, "destinations")
		case "countries":
			r.countries = d.strList(v, "countries")
		case "clients":
			r.clients = d.strList(v, "clients")
		case "methods":
			r.methods = d.strList(v, "methods")
		case "ports":
			r.ports = d.strList(v, "ports")
		case "paths":
			r.paths = d.strList(v, "paths")
		case "upload":
			if b, ok := d.boolean(v, "upload"); ok {
				r.upload = &b
			}
		case "min_body_bytes":
			if s, ok := d.size(v, "min_body_bytes", false); ok {
				r.minBody, r.minBodyNode = &s, v
			}
		case "file_parts":
			if b, ok := d.boolean(v, "file_parts"); ok {
				r.fileParts = &b
			}
		case "content_types":
			r.contentTypes = d.strList(v, "content_types")
		case "upload_budget":
			if s, ok := d.size(v, "upload_budget", true); ok {
				r.budget = &budgetValue{s, v}
			}
		case "message":
			t, _ := d.str(v, "message")
			r.message = t.V
		case "alternative":
			t, _ := d.str(v, "alternative")
			r.alternative = t.V
		}
	})
	return r
}

func (d *decoder) test(n *yaml.Node) wireTest {
	t := wireTest{node: n}
	d.fields(n, "a test", testFields, func(key string, _, v *yaml.Node) {
		switch key {
		case "name":
			t.name, _ = d.str(v, "test name")
		case "request":
			t.request, _ = d.str(v, "request")
		case "client":
			t.client, _ = d.str(v, "client")
		case "country":
			t.country, _ = d.str(v, "country")
		case "body_bytes":
			if s, ok := d.size(v, "body_bytes", false); ok {
				t.bodyBytes = &s
			}
		case "content_type":
			t.contentType, _ = d.str(v, "content_type")
		case "file_parts":
			if b, ok := d.boolean(v, "file_parts"); ok {
				t.fileParts = &b
			}
		case "part_types":
			t.partTypes = d.strList(v, "part_types")
		case "content_encoded":
			if b, ok := d.boolean(v, "content_encoded"); ok {
				t.encoded = &b
			}
		case "expect":
			t.expect, _ = d.str(v, "expect")
		case "rule":
			t.rule, _ = d.str(v, "rule")
		case "budget":
			if s, ok := d.size(v, "budget", true); ok {
				t.budget = &budgetValue{s, v}
			}
		case "inspect":
			if b, ok := d.boolean(v, "inspect"); ok {
				t.inspect = &b
			}
		}
	})
	return t
}

var yamlLineRE = regexp.MustCompile(`line (\d+)(?:, column (\d+))?: (.*)`)

// yamlError turns a yaml.v3 syntax error ("yaml: line 4: mapping values are
// not allowed in this context") into a positioned Error.
func yamlError(file string, err error) *Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		e := &Error{File: file, Msg: "YAML syntax: " + m[3]}
		fmt.Sscan(m[1], &e.Line)
		if m[2] != "" {
			fmt.Sscan(m[2], &e.Column)
		}
		return e
	}
	return &Error{File: file, Msg: "YAML syntax: " + msg}
}

package rules

import (
	"fmt"
	"mime"
	"net/netip"
	"net/url"
	"strings"
)

// TestCase is one example a rules file carries: request facts and the
// decision the author expects. `sekisho check` runs them, and a reload whose
// test cases fail is rejected like a syntax error — the rules' own unit
// tests, written where the rules are.
type TestCase struct {
	Name   string
	File   string
	Line   int
	Facts  Facts  // as the proxy would gather them (Final is set)
	Expect Action // expected action
	Rule   string // expected rule name; "" = any
	Budget *int64 // expected stream budget; nil = not checked
	// Inspect is the expected interception decision of a CONNECT; nil =
	// not checked.
	Inspect *bool
	parts   []string
}

func (c *compiler) compileTest(file string, w *wireTest, ruleNames map[string]*Rule) *TestCase {
	tc := &TestCase{Name: w.name.V, File: file, Line: w.node.Line}
	if tc.Name == "" {
		c.errorf(file, w.node, "a test needs a name")
		return nil
	}
	bad := func(format string, args ...any) *TestCase {
		c.errorf(file, w.node, "test %q: %s", tc.Name, fmt.Sprintf(format, args...))
		return nil
	}
	f := &tc.Facts
	f.Final = true
	if w.request.V == "" {
		return bad(`needs a request, such as "POST https://example.com/upload" or "CONNECT example.com:443"`)
	}
	method, target, ok := strings.Cut(w.request.V, " ")
	target = strings.TrimSpace(target)
	if !ok || target == "" {
		return bad("request %q: write the method and the URL, such as \"POST https://example.com/upload\"", w.request.V)
	}
	f.Method = strings.ToUpper(method)
	if f.Method == "CONNECT" {
		host, port, err := SplitHostPort(target, 0)
		if err != nil {
			return bad("request %q: %v", w.request.V, err)
		}
		f.Host, f.Port, f.Stream = host, port, true
	} else {
		u, err := url.Parse(target)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			return bad("request %q: the URL must be absolute, such as https://example.com/path", w.request.V)
		}
		def := uint16(80)
		if u.Scheme == "https" || u.Scheme == "wss" {
			def = 443
		}
		host, port, err := SplitHostPort(u.Host, def)
		if err != nil {
			return bad("request %q: %v", w.request.V, err)
		}
		f.Host, f.Port = host, port
		f.Path = CleanPath(u.Path)
		f.Stream = u.Scheme == "ws" || u.Scheme == "wss"
	}
	if a, err := netip.ParseAddr(f.Host); err == nil {
		f.Addr = a
	}
	if w.client.V != "" {
		a, err := netip.ParseAddr(w.client.V)
		if err != nil {
			return bad("client %q is not an IP address", w.client.V)
		}
		f.Client = a.Unmap()
	}
	switch v := w.country.V; {
	case v == "":
		return bad("needs country: the country of the address dialed (such as KR, or internal, unknown)")
	case v == CountryInternal || v == CountryUnknown:
		f.Country = v
	case ValidCountry(strings.ToUpper(v)):
		f.Country = strings.ToUpper(v)
	default:
		return bad("country %q is not an ISO 3166-1 alpha-2 code, internal or unknown", v)
	}
	if w.bodyBytes != nil {
		f.Body.Present = *w.bodyBytes > 0
		f.Body.Size = *w.bodyBytes
		f.Body.SizeExact = true
	}
	if w.contentType.V != "" {
		mt, _, err := mime.ParseMediaType(w.contentType.V)
		if err != nil {
			return bad("content_type %q is not a media type", w.contentType.V)
		}
		f.Body.ContentType = mt
	}
	if w.encoded != nil {
		f.Body.Encoded = *w.encoded
	}
	multipart := strings.HasPrefix(f.Body.ContentType, "multipart/")
	switch {
	case w.fileParts != nil:
		f.Body.FileParts = TriOf(*w.fileParts)
	case len(w.partTypes) > 0:
		f.Body.FileParts = TriYes
	case !multipart:
		f.Body.FileParts = TriNo
	}
	for _, p := range w.partTypes {
		tc.parts = append(tc.parts, strings.ToLower(p.V))
	}
	f.Body.PartTypes = tc.parts
	f.Body.PartsComplete = !f.Body.Encoded
	if w.expect.V == "" {
		return bad("needs expect: allow, log or block")
	}
	a, ok := ParseAction(w.expect.V)
	if !ok {
		return bad("expect %q is not one of allow, log, block", w.expect.V)
	}
	tc.Expect = a
	if w.rule.V != "" {
		if w.rule.V != DefaultRuleName && ruleNames[w.rule.V] == nil {
			return bad("expects rule %q, which is not defined", w.rule.V)
		}
		tc.Rule = w.rule.V
	}
	if w.budget != nil {
		b := w.budget.v
		tc.Budget = &b
	}
	if w.inspect != nil {
		if !f.Stream || f.Method != "CONNECT" {
			return bad("inspect: applies to CONNECT requests only (request %q)", w.request.V)
		}
		v := *w.inspect
		tc.Inspect = &v
	}
	return tc
}

// Run evaluates the test case against s and returns nil, or the reason it
// failed.
func (tc *TestCase) Run(s *Set) error {
	f := tc.Facts
	s.Prepare(&f)
	d := s.Decide(&f)
	var problems []string
	if d.Action != tc.Expect {
		problems = append(problems, fmt.Sprintf("expected %s, got %s", tc.Expect, d.Action))
	}
	if tc.Rule != "" && d.RuleName() != tc.Rule {
		problems = append(problems, fmt.Sprintf("expected rule %q, got %q", tc.Rule, d.RuleName()))
	}
	if tc.Budget != nil && d.Budget != *tc.Budget {
		problems = append(problems, fmt.Sprintf("expected budget %s, got %s", FormatSize(*tc.Budget), FormatSize(d.Budget)))
	}
	if tc.Inspect != nil {
		if in := s.Inspect(&f); in.Inspect != *tc.Inspect {
			problems = append(problems, fmt.Sprintf("expected inspect %v, got %v (by %s)", *tc.Inspect, in.Inspect, in.Rule))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	return fmt.Errorf("%s (service %s, effective country %s, destination %s)",
		strings.Join(problems, "; "), f.ServiceName(), f.Effective, f.Destination)
}

// RunTests runs every test case and returns the failures, positioned at the
// test in its file.
func (s *Set) RunTests() ErrorList {
	var fails ErrorList
	for _, tc := range s.tests {
		if err := tc.Run(s); err != nil {
			fails = append(fails, &Error{File: tc.File, Line: tc.Line, Msg: fmt.Sprintf("test %q failed: %v", tc.Name, err)})
		}
	}
	return capErrors(fails)
}

// FormatSize writes a byte count the way rules files write it.
func FormatSize(n int64) string {
	switch {
	case n == Unlimited:
		return "unlimited"
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sekisho/sekisho/geo"
	"github.com/sekisho/sekisho/proxy/dial"
	"github.com/sekisho/sekisho/rules"
)

func cmdExplain(args []string, stdout, stderr io.Writer) int {
	return explainMain(args, stdout, stderr, nil)
}

// explainMain is cmdExplain with an injectable resolver (tests).
func explainMain(args []string, stdout, stderr io.Writer, resolver dial.Resolver) int {
	fs := flag.NewFlagSet("explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration file (its rules and geo database are used)")
	rulesPath := fs.String("rules", "", "rules file or directory (overrides the config's)")
	bodyBytes := fs.String("body-bytes", "", `request body size, such as 2MiB (default: none for GET and the like; for POST, PUT and PATCH a body of unknown size)`)
	contentType := fs.String("content-type", "", "request Content-Type, such as multipart/form-data or image/jpeg")
	fileParts := fs.Bool("file-parts", false, "the multipart body carries a file")
	client := fs.String("client", "", "client IP address (decides the client group)")
	country := fs.String("country", "", "pretend the dialed address is in this country (what-if; skips geolocation)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: sekisho explain [flags] METHOD URL

Dry-runs one request the way the proxy would handle it, without sending
anything: which service the host belongs to, which addresses it resolves to
and where each is, which one would be dialed, the declared storage country,
which rule decides, and the decision. For an https URL it shows the CONNECT
tunnel (and its upload budget) and, separately, what the request inside
would get if the tunnel were inspected.

Examples:
  sekisho explain POST https://obs.line-scdn.net/upload --body-bytes 2MiB --content-type image/jpeg
  sekisho explain --client 10.1.2.3 GET http://example.org/
  sekisho explain --country KR PUT http://files.example.com/a.pdf --body-bytes 10MiB

Flags (before or after METHOD URL):
`)
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return exitUsage(err)
	}
	if len(pos) != 2 {
		fs.Usage()
		return 2
	}
	method, target := strings.ToUpper(pos[0]), pos[1]

	cfg := defaultConfig()
	if *configPath != "" {
		c, err := loadConfig(*configPath)
		if err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			return 1
		}
		cfg = c
	}
	if *rulesPath != "" {
		cfg.Rules = *rulesPath
	}
	set, err := rules.Load(cfg.Rules)
	if err != nil {
		fmt.Fprintf(stderr, "rules are not valid:\n%v\n", err)
		return 1
	}
	var db *geo.Database
	if cfg.Geo.Database != "" {
		db, err = geo.Open(cfg.Geo.Database)
	} else {
		db, err = geo.Embedded()
	}
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return 1
	}
	internal := []netip.Prefix(cfg.Geo.InternalNetworks)
	if internal == nil {
		internal = geo.DefaultInternal()
	}
	var loc dial.Locator = geo.NewStore(db, internal, nil)
	if *country != "" {
		c := strings.ToLower(*country)
		if c != geo.CountryInternal && c != geo.CountryUnknown {
			c = strings.ToUpper(c)
			if !rules.ValidCountry(c) {
				fmt.Fprintf(stderr, "--country %q is not an ISO 3166-1 alpha-2 code (nor internal or unknown)\n", *country)
				return 2
			}
		}
		loc = fixedLocator(c)
	}
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	if cfg.Resolver.HostsFile != "" {
		hr, err := loadHostsFile(cfg.Resolver.HostsFile, resolver)
		if err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			return 1
		}
		resolver = hr
	}

	f := rules.Facts{Method: method, Final: true}
	var scheme string
	if method == "CONNECT" {
		host, port, err := rules.SplitHostPort(target, 0)
		if err != nil {
			fmt.Fprintf(stderr, "CONNECT target %q: %v\n", target, err)
			return 2
		}
		f.Host, f.Port, f.Stream = host, port, true
	} else {
		u, err := url.Parse(target)
		if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
			fmt.Fprintf(stderr, "URL %q: give an absolute http:// or https:// URL\n", target)
			return 2
		}
		scheme = u.Scheme
		def := uint16(80)
		if scheme == "https" {
			def = 443
		}
		host, port, err := rules.SplitHostPort(u.Host, def)
		if err != nil {
			fmt.Fprintf(stderr, "URL %q: %v\n", target, err)
			return 2
		}
		f.Host, f.Port = host, port
		f.Path = rules.CleanPath(u.Path)
	}
	if *client != "" {
		a, err := netip.ParseAddr(*client)
		if err != nil {
			fmt.Fprintf(stderr, "--client %q is not an IP address\n", *client)
			return 2
		}
		f.Client = a.Unmap()
	}
	bodyNote := ""
	f.Body.SizeExact = true
	if *bodyBytes != "" {
		n, err := rules.ParseSize(*bodyBytes, false)
		if err != nil {
			fmt.Fprintf(stderr, "--body-bytes: %v\n", err)
			return 2
		}
		f.Body.Present, f.Body.Size = n > 0, n
	} else if bodyMethod(f.Method) {
		// A POST, PUT or PATCH carries a body: without its size, decide
		// as for an upload of unknown length (chunked), not as bodyless.
		f.Body.Present, f.Body.Size, f.Body.SizeExact = true, 0, false
		bodyNote = "assumed present, size unknown (give --body-bytes for a size)"
	}
	if *contentType != "" {
		mt, _, err := mime.ParseMediaType(*contentType)
		if err != nil {
			fmt.Fprintf(stderr, "--content-type %q is not a media type\n", *contentType)
			return 2
		}
		f.Body.ContentType = mt
	}
	f.Body.FileParts = rules.TriOf(*fileParts)
	f.Body.PartsComplete = true

	w := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	defer w.Flush()
	row := func(k, format string, a ...any) { fmt.Fprintf(w, "%s\t%s\n", k, fmt.Sprintf(format, a...)) }

	row("request", "%s %s", method, target)
	if bodyNote != "" {
		row("body", "%s", bodyNote)
	}
	svc, ep := set.Catalog().Lookup(f.Host)
	switch {
	case svc == nil:
		row("service", "none in the catalog (other)")
	case ep != nil:
		row("service", "%s (%s), endpoint %s", svc.Name, svc.DisplayName(), ep.Name)
	default:
		row("service", "%s (%s)", svc.Name, svc.DisplayName())
	}
	if f.Client.IsValid() {
		g := set.ClientGroup(f.Client)
		name := rules.OtherGroup
		if g != nil {
			name = g.Name
		}
		row("client", "%s, group %s", f.Client, name)
	}

	d := dial.New(dial.Config{Resolver: resolver, Geo: loc, Deny: cfg.denyList(), Allow: []netip.Prefix(cfg.Destinations.Allow)})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := netip.ParseAddr(f.Host); err != nil {
		addrs, err := resolver.LookupNetIP(ctx, "ip", f.Host)
		if err != nil {
			row("resolved", "FAILED: %v (the country is then unknown)", err)
		} else {
			sort.Slice(addrs, func(i, j int) bool { return addrs[i].Less(addrs[j]) })
			for i, a := range addrs {
				l := loc.Lookup(a.Unmap())
				label := "resolved"
				if i > 0 {
					label = ""
				}
				note := ""
				if err := d.Check(netip.AddrPortFrom(a.Unmap(), f.Port)); err != nil {
					note = "  (denied: " + err.Error() + ")"
				}
				row(label, "%s  %s%s%s", a, l.Country, asnSuffix(l.ASN), note)
			}
		}
	}
	t, err := d.Resolve(ctx, f.Host, f.Port, func(l geo.Location) int {
		switch set.Classify(l.Country) {
		case rules.Domestic:
			return 0
		case rules.Internal:
			return 1
		case rules.Foreign:
			return 2
		}
		return 3
	})
	switch {
	case err != nil && t.Denied > 0 && t.Denied == t.Candidates:
		row("dials", "nothing: %v", err)
		row("decision", "REFUSED (403 destination denied), whatever the rules say")
		return 0
	case err != nil:
		f.Country = geo.CountryUnknown
		row("dials", "nothing (%v)", err)
	default:
		f.Addr = t.Addr.Addr()
		f.Country = t.Location.Country
		row("dials", "%s  %s%s", t.Addr, t.Location.Country, asnSuffix(t.Location.ASN))
	}

	decide := func(label string, f rules.Facts) {
		set.Prepare(&f)
		if f.Declared != "" {
			row("declared", "%s (storage country declared in the catalog)", f.Declared)
		}
		row("effective", "%s → %s", f.Effective, f.Destination)
		dec := set.Decide(&f)
		where := "the default action"
		if r := dec.Rule; r != nil {
			where = fmt.Sprintf("rule %s (%s:%d)", r.Name, r.File, r.Line)
		}
		verdict := strings.ToUpper(dec.Action.String())
		if dec.WouldBlock() {
			verdict = "WOULD BLOCK (report-only mode: let through and logged)"
		}
		if dec.FailClosed {
			verdict += " (fail closed: a fact the rule needs is unknown)"
		}
		row(label, "%s by %s", verdict, where)
		if f.Stream {
			row("budget", "%s of upload per tunnel", rules.FormatSize(dec.Budget))
		}
		if r := dec.Rule; r != nil && dec.Action == rules.Block && r.Message != "" {
			row("message", "%s", strings.Join(strings.Fields(r.Message), " "))
		}
	}
	inspection := func(tf rules.Facts) bool {
		if cfg.TLS.CADir == "" {
			row("inspect", "no: TLS interception is off (no tls.ca_dir in the configuration)")
			return false
		}
		set.Prepare(&tf)
		in := set.Inspect(&tf)
		why := in.Rule
		if in.Bypass != nil {
			why += " — " + in.Bypass.Reason
		}
		row("inspect", "%s (%s)", map[bool]string{true: "yes: the TLS is opened and each request inside is decided", false: "no: tunnelled with the upload budget"}[in.Inspect], why)
		return in.Inspect
	}
	switch {
	case method == "CONNECT":
		decide("decision", f)
		inspection(f)
		return 0
	case scheme == "https":
		tf := f
		tf.Method, tf.Path, tf.Stream, tf.Body = "CONNECT", "", true, rules.Body{FileParts: rules.TriNo, PartsComplete: true, SizeExact: true}
		decide("tunnel", tf)
		if inspection(tf) {
			row("", "inside the opened tunnel:")
		} else {
			row("", "if the tunnel were opened, the request inside would get:")
		}
	}
	decide("decision", f)
	return 0
}

type fixedLocator string

func (c fixedLocator) Lookup(netip.Addr) geo.Location { return geo.Location{Country: string(c)} }

func asnSuffix(asn uint32) string {
	if asn == 0 {
		return ""
	}
	return fmt.Sprintf(" (AS%d)", asn)
}

// parseInterleaved parses flags that may come before, between or after the
// positional arguments ("explain POST URL --body-bytes 1MiB").
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// bodyMethod reports the methods that carry a request body.
func bodyMethod(m string) bool {
	return m == http.MethodPost || m == http.MethodPut || m == http.MethodPatch
}

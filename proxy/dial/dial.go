// Package dial turns a destination name into the one address sekisho will
// connect to, and connects only there.
//
// The proxy's policy is only as good as the address it geolocates: if the
// decision looked at one IP and the connection went to another (a second
// DNS answer, a pooled connection, a resolver that changed its mind), an
// upload could leave the country that the rules believed stayed home. So
// Resolve resolves once, geolocates every address, drops the ones that may
// never be dialed, prefers the caller's best class of address (domestic
// first), and returns it as a netip.AddrPort. DialContext then refuses
// anything that is not an address literal: a name never reaches net.Dial.
//
// Non-goals: dial makes no policy decision (the caller ranks addresses and
// decides), speaks no HTTP, and does not cache DNS answers.
package dial

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/sekisho/sekisho/geo"
)

// Resolver looks up a name's addresses. *net.Resolver satisfies it; tests
// inject a static map so that names resolve to loopback test servers.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Locator geolocates an address. *geo.Store satisfies it.
type Locator interface {
	Lookup(netip.Addr) geo.Location
}

// Target is where a request will go: the address to dial and where it is.
type Target struct {
	Addr     netip.AddrPort
	Location geo.Location
	// Candidates is how many addresses the name resolved to (1 for a
	// literal), Denied how many of them were refused.
	Candidates int
	Denied     int
}

// ErrDenied matches every DeniedError.
var ErrDenied = errors.New("destination denied")

// DeniedError is a destination sekisho must never connect to: cloud
// metadata, link-local, loopback (unless allowed), its own listeners.
type DeniedError struct {
	Addr   netip.Addr
	Reason string
}

func (e *DeniedError) Error() string {
	return fmt.Sprintf("destination %s is denied: %s", e.Addr, e.Reason)
}

// Is makes errors.Is(err, ErrDenied) true.
func (e *DeniedError) Is(target error) bool { return target == ErrDenied }

// ResolveError is a name that did not resolve (in time).
type ResolveError struct {
	Host string
	Err  error
}

func (e *ResolveError) Error() string {
	return fmt.Sprintf("cannot resolve %s: %v", e.Host, e.Err)
}

func (e *ResolveError) Unwrap() error { return e.Err }

// DefaultDeny are the networks refused unless the configuration replaces
// the list: loopback, link-local (which holds 169.254.169.254, the metadata
// service of AWS, GCP and Azure), the AWS IPv6 metadata address, Alibaba's
// metadata address and Azure's WireServer.
func DefaultDeny() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("169.254.0.0/16"),
		netip.MustParsePrefix("fe80::/10"),
		netip.MustParsePrefix("fd00:ec2::254/128"),
		netip.MustParsePrefix("100.100.100.200/32"),
		netip.MustParsePrefix("168.63.129.16/32"),
	}
}

// Config configures a Dialer.
type Config struct {
	Resolver Resolver // nil means net.DefaultResolver
	Geo      Locator
	// Deny is the list of refused networks (DefaultDeny when nil; an empty
	// non-nil slice denies none of them). Unspecified, multicast and
	// broadcast addresses are always refused.
	Deny []netip.Prefix
	// Allow are exceptions to Deny (a site whose intranet is on loopback,
	// the tests' upstreams). They never lift the fixed refusals: zones,
	// unspecified, multicast, broadcast and Self.
	Allow []netip.Prefix
	// Self are the proxy's own listener addresses: dialing them would loop.
	Self           []netip.AddrPort
	ResolveTimeout time.Duration // default 5s
	DialTimeout    time.Duration // default 10s
	KeepAlive      time.Duration // TCP keep-alive period; default 30s
}

// Dialer resolves, geolocates, pins and dials. It is safe for concurrent use.
type Dialer struct {
	resolver Resolver
	geo      Locator
	deny     []netip.Prefix
	allow    []netip.Prefix
	self     map[netip.AddrPort]bool
	resolveT time.Duration
	net      net.Dialer
}

// New builds a Dialer from cfg.
func New(cfg Config) *Dialer {
	d := &Dialer{
		resolver: cfg.Resolver,
		geo:      cfg.Geo,
		deny:     cfg.Deny,
		allow:    cfg.Allow,
		self:     map[netip.AddrPort]bool{},
		resolveT: cfg.ResolveTimeout,
	}
	if d.resolver == nil {
		d.resolver = net.DefaultResolver
	}
	if d.deny == nil {
		d.deny = DefaultDeny()
	}
	if d.resolveT <= 0 {
		d.resolveT = 5 * time.Second
	}
	for _, ap := range cfg.Self {
		d.self[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = true
	}
	d.net.Timeout = cfg.DialTimeout
	if d.net.Timeout <= 0 {
		d.net.Timeout = 10 * time.Second
	}
	d.net.KeepAlive = cfg.KeepAlive
	if d.net.KeepAlive == 0 {
		d.net.KeepAlive = 30 * time.Second
	}
	return d
}

// nat64 is the well-known NAT64 prefix (RFC 6052): its addresses embed the
// IPv4 address a NAT64 gateway connects to.
var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// Check reports why addr:port may not be dialed, or nil.
func (d *Dialer) Check(ap netip.AddrPort) error {
	a := ap.Addr().Unmap()
	switch {
	case !a.IsValid():
		return &DeniedError{Addr: a, Reason: "invalid address"}
	case a.Zone() != "":
		// netip prefixes never contain a zoned address, so a zone would
		// slip past the deny list; no destination on the internet has one.
		return &DeniedError{Addr: a, Reason: "IPv6 zone " + a.Zone()}
	case a.IsUnspecified():
		return &DeniedError{Addr: a, Reason: "unspecified address"}
	case a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return &DeniedError{Addr: a, Reason: "multicast or broadcast address"}
	case a.Is4() && a.As4()[0] == 0:
		return &DeniedError{Addr: a, Reason: "address in 0.0.0.0/8"}
	case d.self[netip.AddrPortFrom(a, ap.Port())]:
		return &DeniedError{Addr: a, Reason: "this is sekisho's own listener"}
	}
	if nat64.Contains(a) {
		// A NAT64 gateway would connect to the embedded IPv4 address.
		b := a.As16()
		if err := d.Check(netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[12:16])), ap.Port())); err != nil {
			return &DeniedError{Addr: a, Reason: "NAT64 address of a denied IPv4 address (" + err.(*DeniedError).Reason + ")"}
		}
	}
	for _, p := range d.allow {
		if p.Contains(a) {
			return nil
		}
	}
	for _, p := range d.deny {
		if p.Contains(a) {
			return &DeniedError{Addr: a, Reason: "in denied network " + p.String()}
		}
	}
	return nil
}

// Resolve finds the address a request to host:port will use. host is a
// normalised host (an IP literal is used as is). rank orders locations,
// lower first (the proxy ranks domestic addresses first); among equals the
// resolver's order is kept. Denied addresses are skipped; when every
// address is denied the error is a *DeniedError.
func (d *Dialer) Resolve(ctx context.Context, host string, port uint16, rank func(geo.Location) int) (Target, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		a = a.Unmap()
		ap := netip.AddrPortFrom(a, port)
		t := Target{Addr: ap, Location: d.geo.Lookup(a), Candidates: 1}
		if err := d.Check(ap); err != nil {
			t.Denied = 1
			return t, err
		}
		return t, nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.resolveT)
	defer cancel()
	addrs, err := d.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return Target{}, &ResolveError{Host: host, Err: err}
	}
	if len(addrs) == 0 {
		return Target{}, &ResolveError{Host: host, Err: errors.New("no addresses")}
	}
	t := Target{Candidates: len(addrs)}
	best := -1
	var firstDenied error
	for _, a := range addrs {
		a = a.Unmap()
		ap := netip.AddrPortFrom(a, port)
		if err := d.Check(ap); err != nil {
			t.Denied++
			if firstDenied == nil {
				firstDenied = err
			}
			continue
		}
		loc := d.geo.Lookup(a)
		r := rank(loc)
		if best < 0 || r < best {
			best, t.Addr, t.Location = r, ap, loc
		}
	}
	if best < 0 {
		return t, firstDenied
	}
	return t, nil
}

// DialContext connects to an address literal ("192.0.2.1:80", "[2001:db8::1]:443")
// after checking it again. A host name is refused: it would mean a code
// path that skipped Resolve, and so skipped geolocation. The connection is
// the bare *net.TCPConn, so that copies between two of them can splice.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("sekisho dialer: refusing to dial %q: not an address literal (names are resolved and geolocated first)", addr)
	}
	return d.Dial(ctx, ap)
}

// Dial connects to ap after checking it.
func (d *Dialer) Dial(ctx context.Context, ap netip.AddrPort) (*net.TCPConn, error) {
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	if err := d.Check(ap); err != nil {
		return nil, err
	}
	c, err := d.net.DialContext(ctx, "tcp", ap.String())
	if err != nil {
		return nil, err
	}
	return c.(*net.TCPConn), nil
}

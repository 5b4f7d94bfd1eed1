package dial

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sekisho/sekisho/geo"
)

// fakeGeo places addresses by a map; anything else is unknown ("").
type fakeGeo map[netip.Addr]string

func (g fakeGeo) Lookup(a netip.Addr) geo.Location { return geo.Location{Country: g[a]} }

type resolverFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

func (f resolverFunc) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return f(ctx, network, host)
}

// noResolver fails the test if a lookup is made.
func noResolver(t *testing.T) Resolver {
	t.Helper()
	return resolverFunc(func(_ context.Context, _, host string) ([]netip.Addr, error) {
		t.Errorf("resolver called for %q; an IP literal must not be looked up", host)
		return nil, errors.New("unexpected lookup")
	})
}

// static answers every name with addrs, counting calls.
func static(calls *atomic.Int32, addrs ...string) Resolver {
	return resolverFunc(func(context.Context, string, string) ([]netip.Addr, error) {
		if calls != nil {
			calls.Add(1)
		}
		out := make([]netip.Addr, len(addrs))
		for i, s := range addrs {
			out[i] = netip.MustParseAddr(s)
		}
		return out, nil
	})
}

// domesticFirst ranks JP addresses 0, everything else 1.
func domesticFirst(l geo.Location) int {
	if l.Country == "JP" {
		return 0
	}
	return 1
}

// noDeny is an empty non-nil deny list: only the fixed refusals apply.
var noDeny = []netip.Prefix{}

func TestCheck(t *testing.T) {
	self := []netip.AddrPort{
		netip.MustParseAddrPort("127.0.0.1:3128"),
		netip.MustParseAddrPort("[::ffff:192.0.2.10]:3128"), // configured v4-mapped
		netip.MustParseAddrPort("[2001:db8::5]:3128"),
	}
	tests := []struct {
		name string
		deny []netip.Prefix // nil: DefaultDeny
		self []netip.AddrPort
		ap   string
		// want is a substring of the denial reason; "" means allowed.
		want string
	}{
		// Always refused, whatever the deny list.
		{name: "unspecified v4", deny: noDeny, ap: "0.0.0.0:80", want: "unspecified"},
		{name: "unspecified v6", deny: noDeny, ap: "[::]:80", want: "unspecified"},
		{name: "unspecified v4-mapped", deny: noDeny, ap: "[::ffff:0.0.0.0]:80", want: "unspecified"},
		{name: "multicast v4", deny: noDeny, ap: "224.0.0.1:80", want: "multicast"},
		{name: "multicast v4 top", deny: noDeny, ap: "239.255.255.255:80", want: "multicast"},
		{name: "multicast v6", deny: noDeny, ap: "[ff02::1]:80", want: "multicast"},
		{name: "multicast v4-mapped", deny: noDeny, ap: "[::ffff:224.0.0.251]:5353", want: "multicast"},
		{name: "broadcast", deny: noDeny, ap: "255.255.255.255:80", want: "broadcast"},
		{name: "broadcast v4-mapped", deny: noDeny, ap: "[::ffff:255.255.255.255]:80", want: "broadcast"},
		{name: "this network 0.1.2.3", deny: noDeny, ap: "0.1.2.3:80", want: "0.0.0.0/8"},
		{name: "this network 0.255.255.255", deny: noDeny, ap: "0.255.255.255:80", want: "0.0.0.0/8"},
		{name: "this network v4-mapped", deny: noDeny, ap: "[::ffff:0.0.0.1]:80", want: "0.0.0.0/8"},
		{name: "invalid", deny: noDeny, ap: "", want: "invalid"},

		// DefaultDeny.
		{name: "loopback v4", ap: "127.0.0.1:80", want: "127.0.0.0/8"},
		{name: "loopback v4 top", ap: "127.255.255.254:80", want: "127.0.0.0/8"},
		{name: "loopback v4-mapped", ap: "[::ffff:127.0.0.1]:80", want: "127.0.0.0/8"},
		{name: "loopback v6", ap: "[::1]:80", want: "::1/128"},
		{name: "link-local v4", ap: "169.254.1.1:80", want: "169.254.0.0/16"},
		{name: "metadata 169.254.169.254", ap: "169.254.169.254:80", want: "169.254.0.0/16"},
		{name: "metadata v4-mapped", ap: "[::ffff:169.254.169.254]:80", want: "169.254.0.0/16"},
		{name: "link-local v6", ap: "[fe80::1]:80", want: "fe80::/10"},
		{name: "link-local v6 top", ap: "[febf:ffff::1]:80", want: "fe80::/10"},
		{name: "AWS v6 metadata", ap: "[fd00:ec2::254]:80", want: "fd00:ec2::254/128"},
		{name: "Alibaba metadata", ap: "100.100.100.200:80", want: "100.100.100.200/32"},
		{name: "Azure WireServer", ap: "168.63.129.16:80", want: "168.63.129.16/32"},
		{name: "Azure WireServer v4-mapped", ap: "[::ffff:168.63.129.16]:32526", want: "168.63.129.16/32"},

		// Neighbours of the denied networks are allowed.
		{name: "public v4", ap: "8.8.8.8:443"},
		{name: "public v6", ap: "[2001:db8::1]:443"},
		{name: "public v4-mapped", ap: "[::ffff:8.8.8.8]:443"},
		{name: "1.0.0.0 is not 0/8", ap: "1.0.0.0:80"},
		{name: "128.0.0.1 is not loopback", ap: "128.0.0.1:80"},
		{name: "169.255.0.1 is not link-local", ap: "169.255.0.1:80"},
		{name: "fec0::1 is not fe80::/10", ap: "[fec0::1]:80"},
		{name: "next to AWS v6 metadata", ap: "[fd00:ec2::253]:80"},
		{name: "next to Alibaba metadata", ap: "100.100.100.201:80"},
		{name: "next to WireServer", ap: "168.63.129.17:80"},
		{name: "255.255.255.254 is not broadcast", ap: "255.255.255.254:80"},
		{name: "private v4 not in DefaultDeny", ap: "10.1.2.3:80"},

		// An empty non-nil Deny denies none of the configurable networks.
		{name: "empty deny: loopback v4", deny: noDeny, ap: "127.0.0.1:80"},
		{name: "empty deny: loopback v6", deny: noDeny, ap: "[::1]:80"},
		{name: "empty deny: metadata", deny: noDeny, ap: "169.254.169.254:80"},
		{name: "empty deny: link-local v6", deny: noDeny, ap: "[fe80::1]:80"},
		{name: "empty deny: AWS v6 metadata", deny: noDeny, ap: "[fd00:ec2::254]:80"},
		{name: "empty deny: Alibaba metadata", deny: noDeny, ap: "100.100.100.200:80"},
		{name: "empty deny: WireServer", deny: noDeny, ap: "168.63.129.16:80"},

		// A configured list replaces DefaultDeny.
		{name: "custom deny: in list", deny: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, ap: "10.1.2.3:80", want: "10.0.0.0/8"},
		{name: "custom deny: v4-mapped in list", deny: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, ap: "[::ffff:10.1.2.3]:80", want: "10.0.0.0/8"},
		{name: "custom deny: loopback no longer denied", deny: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, ap: "127.0.0.1:80"},

		// Self: by address and port, in any spelling.
		{name: "self v4", deny: noDeny, self: self, ap: "127.0.0.1:3128", want: "own listener"},
		{name: "self v4 asked v4-mapped", deny: noDeny, self: self, ap: "[::ffff:127.0.0.1]:3128", want: "own listener"},
		{name: "self configured v4-mapped asked v4", deny: noDeny, self: self, ap: "192.0.2.10:3128", want: "own listener"},
		{name: "self configured v4-mapped asked v4-mapped", deny: noDeny, self: self, ap: "[::ffff:192.0.2.10]:3128", want: "own listener"},
		{name: "self v6", deny: noDeny, self: self, ap: "[2001:db8::5]:3128", want: "own listener"},
		{name: "self address other port", deny: noDeny, self: self, ap: "127.0.0.1:3129"},
		{name: "self port other address", deny: noDeny, self: self, ap: "127.0.0.2:3128"},
		{name: "self v4-mapped other port", deny: noDeny, self: self, ap: "[::ffff:192.0.2.10]:443"},
		{name: "self v6 other port", deny: noDeny, self: self, ap: "[2001:db8::5]:80"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := New(Config{Resolver: noResolver(t), Geo: fakeGeo{}, Deny: tt.deny, Self: tt.self})
			var ap netip.AddrPort
			if tt.ap != "" {
				ap = netip.MustParseAddrPort(tt.ap)
			}
			err := d.Check(ap)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Check(%s) = %v, want allowed", tt.ap, err)
				}
				return
			}
			var de *DeniedError
			if !errors.As(err, &de) {
				t.Fatalf("Check(%s) = %v (%T), want *DeniedError", tt.ap, err, err)
			}
			if !errors.Is(err, ErrDenied) {
				t.Errorf("errors.Is(%v, ErrDenied) = false", err)
			}
			if !strings.Contains(de.Reason, tt.want) {
				t.Errorf("Check(%s) reason = %q, want it to mention %q", tt.ap, de.Reason, tt.want)
			}
			if de.Addr.Is4In6() {
				t.Errorf("DeniedError.Addr = %s, want the unmapped address", de.Addr)
			}
			if msg := err.Error(); !strings.Contains(msg, "denied") || !strings.Contains(msg, tt.want) {
				t.Errorf("Error() = %q, want it to say denied and why (%q)", msg, tt.want)
			}
		})
	}
}

// TestCheckZonedAddresses: an IPv6 zone must not let a denied address
// through. netip.Prefix.Contains is false for any address with a zone, so
// "fe80::1%eth0" or "::1%lo" slip past the deny list. rules.NormalizeHost
// refuses zones in request hosts, but Check/DialContext accept them (a
// resolver can answer with a zoned address, e.g. from /etc/hosts).
func TestCheckZonedAddresses(t *testing.T) {
	tests := []struct {
		name string
		ap   string
	}{
		{name: "link-local with zone", ap: "[fe80::1%eth0]:80"},
		{name: "loopback v6 with zone", ap: "[::1%lo]:80"},
		{name: "AWS v6 metadata with zone", ap: "[fd00:ec2::254%eth0]:80"},
		{name: "v4-mapped metadata with zone", ap: "[::ffff:169.254.169.254%eth0]:80"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := New(Config{Resolver: noResolver(t), Geo: fakeGeo{}})
			if err := d.Check(netip.MustParseAddrPort(tt.ap)); !errors.Is(err, ErrDenied) {
				t.Errorf("BUG: Check(%s) = %v, want a denial: the zone hides the address from the deny list (netip.Prefix.Contains is false for zoned addresses)", tt.ap, err)
			}
		})
	}
	t.Run("resolved zoned address", func(t *testing.T) {
		d := New(Config{Resolver: static(nil, "fe80::1%eth0"), Geo: fakeGeo{}})
		tg, err := d.Resolve(context.Background(), "hosts-file.example", 80, domesticFirst)
		if !errors.Is(err, ErrDenied) {
			t.Errorf("BUG: Resolve to a zoned link-local address = %v, %v; want ErrDenied", tg.Addr, err)
		}
	})
	t.Run("dial zoned loopback", func(t *testing.T) {
		ln, err := net.Listen("tcp", "[::1]:0")
		if err != nil {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		defer ln.Close()
		lo := loopbackInterface(t)
		addr := "[::1%" + lo + "]:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		d := New(Config{Resolver: noResolver(t), Geo: fakeGeo{}, DialTimeout: time.Second})
		c, err := d.DialContext(context.Background(), "tcp", addr)
		if err == nil {
			c.Close()
			t.Errorf("BUG: DialContext(%q) with DefaultDeny connected to the loopback listener", addr)
		}
	})
}

// loopbackInterface names the loopback interface ("lo" on Linux).
func loopbackInterface(t *testing.T) string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Skipf("interfaces: %v", err)
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback != 0 {
			return ifc.Name
		}
	}
	t.Skip("no loopback interface")
	return ""
}

func TestResolveLiteral(t *testing.T) {
	g := fakeGeo{
		netip.MustParseAddr("192.0.2.1"):   "JP",
		netip.MustParseAddr("2001:db8::1"): "KR",
	}
	tests := []struct {
		name       string
		host       string
		wantAddr   string
		wantCC     string
		wantDenied bool
	}{
		{name: "v4", host: "192.0.2.1", wantAddr: "192.0.2.1:443", wantCC: "JP"},
		{name: "v6", host: "2001:db8::1", wantAddr: "[2001:db8::1]:443", wantCC: "KR"},
		{name: "v4-mapped is unmapped", host: "::ffff:192.0.2.1", wantAddr: "192.0.2.1:443", wantCC: "JP"},
		{name: "unplaced", host: "198.51.100.7", wantAddr: "198.51.100.7:443", wantCC: ""},
		{name: "denied metadata", host: "169.254.169.254", wantAddr: "169.254.169.254:443", wantDenied: true},
		{name: "denied v4-mapped loopback", host: "::ffff:127.0.0.1", wantAddr: "127.0.0.1:443", wantDenied: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := New(Config{Resolver: noResolver(t), Geo: g})
			tg, err := d.Resolve(context.Background(), tt.host, 443, domesticFirst)
			if tt.wantDenied {
				var de *DeniedError
				if !errors.As(err, &de) || !errors.Is(err, ErrDenied) {
					t.Fatalf("Resolve(%s) error = %v, want *DeniedError", tt.host, err)
				}
				if tg.Denied != 1 {
					t.Errorf("Denied = %d, want 1", tg.Denied)
				}
			} else if err != nil {
				t.Fatalf("Resolve(%s): %v", tt.host, err)
			} else if tg.Denied != 0 {
				t.Errorf("Denied = %d, want 0", tg.Denied)
			}
			if got := tg.Addr.String(); got != tt.wantAddr {
				t.Errorf("Addr = %s, want %s", got, tt.wantAddr)
			}
			if tg.Location.Country != tt.wantCC {
				t.Errorf("Country = %q, want %q", tg.Location.Country, tt.wantCC)
			}
			if tg.Candidates != 1 {
				t.Errorf("Candidates = %d, want 1", tg.Candidates)
			}
		})
	}
}

func TestResolveName(t *testing.T) {
	g := fakeGeo{
		netip.MustParseAddr("203.0.113.1"): "KR",
		netip.MustParseAddr("203.0.113.2"): "JP",
		netip.MustParseAddr("203.0.113.3"): "JP",
		netip.MustParseAddr("203.0.113.4"): "US",
		netip.MustParseAddr("2001:db8::2"): "JP",
		// Denied addresses that the database places at home must still lose.
		netip.MustParseAddr("127.0.0.1"):       "JP",
		netip.MustParseAddr("169.254.169.254"): "JP",
	}
	tests := []struct {
		name       string
		answer     []string
		want       string
		wantCC     string
		candidates int
		denied     int
	}{
		{name: "single", answer: []string{"203.0.113.1"}, want: "203.0.113.1:443", wantCC: "KR", candidates: 1},
		{name: "lowest rank wins", answer: []string{"203.0.113.1", "203.0.113.4", "203.0.113.2"}, want: "203.0.113.2:443", wantCC: "JP", candidates: 3},
		{name: "resolver order among equals", answer: []string{"203.0.113.1", "203.0.113.3", "203.0.113.2"}, want: "203.0.113.3:443", wantCC: "JP", candidates: 3},
		{name: "resolver order among equals, reversed", answer: []string{"203.0.113.2", "203.0.113.3"}, want: "203.0.113.2:443", wantCC: "JP", candidates: 2},
		{name: "first of all-foreign", answer: []string{"203.0.113.4", "203.0.113.1"}, want: "203.0.113.4:443", wantCC: "US", candidates: 2},
		{name: "unplaced ranks with the foreign", answer: []string{"198.51.100.9", "203.0.113.1"}, want: "198.51.100.9:443", wantCC: "", candidates: 2},
		{name: "v6 domestic preferred", answer: []string{"203.0.113.1", "2001:db8::2"}, want: "[2001:db8::2]:443", wantCC: "JP", candidates: 2},
		{name: "4in6 unmapped", answer: []string{"::ffff:203.0.113.1"}, want: "203.0.113.1:443", wantCC: "KR", candidates: 1},
		{name: "4in6 unmapped before geolocation", answer: []string{"203.0.113.1", "::ffff:203.0.113.2"}, want: "203.0.113.2:443", wantCC: "JP", candidates: 2},
		{name: "denied skipped and counted", answer: []string{"169.254.169.254", "203.0.113.1", "127.0.0.1"}, want: "203.0.113.1:443", wantCC: "KR", candidates: 3, denied: 2},
		{name: "denied domestic-looking skipped", answer: []string{"203.0.113.4", "::ffff:127.0.0.1"}, want: "203.0.113.4:443", wantCC: "US", candidates: 2, denied: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int32
			d := New(Config{Resolver: static(&calls, tt.answer...), Geo: g})
			tg, err := d.Resolve(context.Background(), "svc.example", 443, domesticFirst)
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if calls.Load() != 1 {
				t.Errorf("resolver called %d times, want 1", calls.Load())
			}
			if got := tg.Addr.String(); got != tt.want {
				t.Errorf("Addr = %s, want %s", got, tt.want)
			}
			if tg.Location.Country != tt.wantCC {
				t.Errorf("Country = %q, want %q", tg.Location.Country, tt.wantCC)
			}
			if tg.Candidates != tt.candidates || tg.Denied != tt.denied {
				t.Errorf("Candidates, Denied = %d, %d; want %d, %d", tg.Candidates, tg.Denied, tt.candidates, tt.denied)
			}
		})
	}
}

func TestResolveAllDenied(t *testing.T) {
	d := New(Config{
		Resolver: static(nil, "169.254.169.254", "::ffff:127.0.0.1", "fe80::1"),
		Geo:      fakeGeo{},
	})
	tg, err := d.Resolve(context.Background(), "metadata.example", 80, domesticFirst)
	var de *DeniedError
	if !errors.As(err, &de) {
		t.Fatalf("Resolve error = %v (%T), want *DeniedError", err, err)
	}
	if !errors.Is(err, ErrDenied) {
		t.Errorf("errors.Is(err, ErrDenied) = false for %v", err)
	}
	if want := netip.MustParseAddr("169.254.169.254"); de.Addr != want {
		t.Errorf("DeniedError.Addr = %s, want the first denied address %s", de.Addr, want)
	}
	if tg.Candidates != 3 || tg.Denied != 3 {
		t.Errorf("Candidates, Denied = %d, %d; want 3, 3", tg.Candidates, tg.Denied)
	}
	if tg.Addr.IsValid() {
		t.Errorf("Addr = %s, want none", tg.Addr)
	}
}

func TestResolveErrors(t *testing.T) {
	boom := errors.New("SERVFAIL")
	tests := []struct {
		name     string
		resolver Resolver
		wantErr  error // matched with errors.Is; nil: only *ResolveError is checked
		maxTime  time.Duration
	}{
		{
			name: "resolver error",
			resolver: resolverFunc(func(context.Context, string, string) ([]netip.Addr, error) {
				return nil, boom
			}),
			wantErr: boom,
		},
		{
			name: "no addresses",
			resolver: resolverFunc(func(context.Context, string, string) ([]netip.Addr, error) {
				return nil, nil
			}),
		},
		{
			name: "timeout",
			resolver: resolverFunc(func(ctx context.Context, _, _ string) ([]netip.Addr, error) {
				if _, ok := ctx.Deadline(); !ok {
					return nil, errors.New("lookup without a deadline")
				}
				<-ctx.Done()
				return nil, ctx.Err()
			}),
			wantErr: context.DeadlineExceeded,
			maxTime: 2 * time.Second,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := New(Config{Resolver: tt.resolver, Geo: fakeGeo{}, ResolveTimeout: 50 * time.Millisecond})
			start := time.Now()
			_, err := d.Resolve(context.Background(), "slow.example", 443, domesticFirst)
			elapsed := time.Since(start)
			var re *ResolveError
			if !errors.As(err, &re) {
				t.Fatalf("Resolve error = %v (%T), want *ResolveError", err, err)
			}
			if re.Host != "slow.example" {
				t.Errorf("ResolveError.Host = %q", re.Host)
			}
			if !strings.Contains(err.Error(), "slow.example") {
				t.Errorf("Error() = %q, want it to name the host", err)
			}
			if errors.Is(err, ErrDenied) {
				t.Errorf("a resolution failure must not look like a denial: %v", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("errors.Is(%v, %v) = false", err, tt.wantErr)
			}
			if tt.maxTime > 0 && (elapsed < 40*time.Millisecond || elapsed > tt.maxTime) {
				t.Errorf("Resolve took %v, want about the 50ms ResolveTimeout", elapsed)
			}
		})
	}
}

func TestDialContextRefuses(t *testing.T) {
	tests := []struct {
		name, addr string
		want       string // substring of the error
		denied     bool
	}{
		{name: "host name", addr: "example.com:80", want: "not an address literal"},
		{name: "localhost name", addr: "localhost:80", want: "not an address literal"},
		{name: "no port", addr: "192.0.2.1", want: "not an address literal"},
		{name: "denied literal", addr: "169.254.169.254:80", want: "denied", denied: true},
		{name: "denied v6 literal", addr: "[::1]:80", want: "denied", denied: true},
		{name: "denied v4-mapped literal", addr: "[::ffff:127.0.0.1]:80", want: "denied", denied: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := New(Config{Resolver: noResolver(t), Geo: fakeGeo{}, DialTimeout: time.Second})
			c, err := d.DialContext(context.Background(), "tcp", tt.addr)
			if err == nil {
				c.Close()
				t.Fatalf("DialContext(%q) connected, want refusal", tt.addr)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("DialContext(%q) error = %q, want it to say %q", tt.addr, err, tt.want)
			}
			if got := errors.Is(err, ErrDenied); got != tt.denied {
				t.Errorf("errors.Is(err, ErrDenied) = %v, want %v", got, tt.denied)
			}
		})
	}
}

func TestDialLoopback(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	lap := ln.Addr().(*net.TCPAddr).AddrPort()

	d := New(Config{Resolver: noResolver(t), Geo: fakeGeo{}, Deny: noDeny, DialTimeout: 5 * time.Second})
	tests := []struct {
		name string
		dial func() (net.Conn, error)
	}{
		{name: "Dial", dial: func() (net.Conn, error) { return d.Dial(context.Background(), lap) }},
		{name: "Dial v4-mapped", dial: func() (net.Conn, error) {
			return d.Dial(context.Background(), netip.AddrPortFrom(netip.AddrFrom16(lap.Addr().As16()), lap.Port()))
		}},
		{name: "DialContext", dial: func() (net.Conn, error) { return d.DialContext(context.Background(), "tcp", lap.String()) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.dial()
			if err != nil {
				t.Fatalf("dial %s: %v", lap, err)
			}
			defer c.Close()
			if _, ok := c.(*net.TCPConn); !ok {
				t.Errorf("conn is %T, want *net.TCPConn (splice needs the bare conn)", c)
			}
			if got := c.RemoteAddr().(*net.TCPAddr).AddrPort(); got != lap {
				t.Errorf("connected to %s, want %s", got, lap)
			}
			srv, ok := <-accepted
			if !ok {
				t.Fatal("listener did not accept")
			}
			defer srv.Close()
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4)
			_ = srv.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := io.ReadFull(srv, buf); err != nil || string(buf) != "ping" {
				t.Errorf("server read %q, %v; want ping", buf, err)
			}
		})
	}

	t.Run("loopback denied by default", func(t *testing.T) {
		d := New(Config{Resolver: noResolver(t), Geo: fakeGeo{}})
		c, err := d.Dial(context.Background(), lap)
		if err == nil {
			c.Close()
			t.Fatal("Dial to loopback with DefaultDeny connected")
		}
		if !errors.Is(err, ErrDenied) {
			t.Errorf("error = %v, want ErrDenied", err)
		}
	})
	t.Run("own listener", func(t *testing.T) {
		d := New(Config{Resolver: noResolver(t), Geo: fakeGeo{}, Deny: noDeny, Self: []netip.AddrPort{lap}})
		c, err := d.Dial(context.Background(), lap)
		if err == nil {
			c.Close()
			t.Fatal("Dial to the proxy's own listener connected")
		}
		if !errors.Is(err, ErrDenied) {
			t.Errorf("error = %v, want ErrDenied", err)
		}
	})
}

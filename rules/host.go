package rules

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/net/idna"
)

// HostError says why a host name is not acceptable as a destination. The
// proxy answers it with 400: a browser never produces such a host.
type HostError struct {
	Host   string
	Reason string
}

func (e *HostError) Error() string {
	return fmt.Sprintf("invalid host %q: %s", e.Host, e.Reason)
}

func hostErr(h, reason string) error { return &HostError{Host: h, Reason: reason} }

// NormalizeHost returns the one spelling of a destination host that service
// matching, rules and logs use, so that "Example.COM.", "example.com" and
// "xn--..." forms of the same name cannot be told apart by the policy:
//
//   - ASCII is lower-cased and one trailing dot is removed;
//   - internationalised names become IDNA A-labels (UTS #46, lookup profile);
//   - IPv6 literals lose their brackets and take netip's canonical form, and
//     IPv4-mapped IPv6 becomes the IPv4 address it carries;
//   - IPv4 in the forms browsers accept (WHATWG URL: "0x7f.1", "2130706433",
//     octal parts) becomes a dotted quad, since that is where a browser
//     would connect;
//   - zones ("%eth0"), empty labels, labels over 63 bytes, names over 253
//     bytes and characters outside letters, digits, "-" and "_" are errors.
//
// A host that is already canonical is returned as is, without allocating.
func NormalizeHost(h string) (string, error) {
	if h == "" {
		return "", hostErr(h, "empty host")
	}
	if h[0] == '[' {
		if h[len(h)-1] != ']' {
			return "", hostErr(h, "unterminated IPv6 literal")
		}
		return normalizeIPv6(h, h[1:len(h)-1])
	}
	if strings.IndexByte(h, ':') >= 0 {
		return normalizeIPv6(h, h)
	}
	if canonicalASCII(h) {
		if endsInNumber(h) {
			return normalizeIPv4(h, h)
		}
		return h, nil
	}
	s := h
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		s = strings.ToLower(s)
	} else {
		a, err := idna.Lookup.ToASCII(s)
		if err != nil {
			return "", hostErr(h, "not a valid internationalised domain name")
		}
		s = a
	}
	s = strings.TrimSuffix(s, ".")
	if !canonicalASCII(s) {
		return "", hostErr(h, describeHostProblem(s))
	}
	if endsInNumber(s) {
		return normalizeIPv4(h, s)
	}
	return s, nil
}

// canonicalASCII reports whether h is already a valid, canonical host name:
// lower-case letters, digits, '-', '_' and dots, no empty label, no label
// over 63 bytes, at most 253 bytes, no trailing dot.
func canonicalASCII(h string) bool {
	if len(h) == 0 || len(h) > 253 {
		return false
	}
	label := 0
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			label++
			if label > 63 {
				return false
			}
		case c == '.':
			if label == 0 {
				return false
			}
			label = 0
		default:
			return false
		}
	}
	return label > 0
}

func describeHostProblem(s string) string {
	switch {
	case s == "":
		return "empty host"
	case len(s) > 253:
		return "longer than 253 bytes"
	case strings.Contains(s, ".."), strings.HasPrefix(s, "."), strings.HasSuffix(s, "."):
		return "empty label"
	}
	for _, l := range strings.Split(s, ".") {
		if len(l) > 63 {
			return "a label is longer than 63 bytes"
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return fmt.Sprintf("character %q is not allowed in a host name", c)
		}
	}
	return "not a host name"
}

// endsInNumber is the WHATWG URL test that makes a host an IPv4 address:
// its last label is all digits, or 0x followed by hex digits.
func endsInNumber(h string) bool {
	last := h
	if i := strings.LastIndexByte(h, '.'); i >= 0 {
		last = h[i+1:]
	}
	if last == "" {
		return false
	}
	if allDigits(last) {
		return true
	}
	if len(last) >= 2 && last[0] == '0' && (last[1] == 'x' || last[1] == 'X') {
		for i := 2; i < len(last); i++ {
			if !isHex(last[i]) {
				return false
			}
		}
		return true
	}
	return false
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return len(s) > 0
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// normalizeIPv4 parses the WHATWG IPv4 forms: one to four parts, each
// decimal, octal (leading 0) or hex (0x); the last part fills the remaining
// bytes.
func normalizeIPv4(orig, s string) (string, error) {
	if a, err := netip.ParseAddr(s); err == nil && a.Is4() {
		// netip accepts only the canonical dotted quad (no leading zeros),
		// so s is already canonical: return it without allocating.
		return s, nil
	}
	parts := strings.Split(s, ".")
	if len(parts) > 4 {
		return "", hostErr(orig, "not a valid IPv4 address")
	}
	nums := make([]uint64, len(parts))
	for i, p := range parts {
		base := 10
		switch {
		case len(p) >= 2 && (p[:2] == "0x" || p[:2] == "0X"):
			p, base = p[2:], 16
			if p == "" {
				p = "0"
			}
		case len(p) >= 2 && p[0] == '0':
			p, base = p[1:], 8
		}
		n, err := strconv.ParseUint(p, base, 64)
		if err != nil {
			return "", hostErr(orig, "not a valid IPv4 address")
		}
		nums[i] = n
	}
	var v uint64
	for i, n := range nums[:len(nums)-1] {
		if n > 255 {
			return "", hostErr(orig, "not a valid IPv4 address")
		}
		v |= n << (8 * (3 - i))
	}
	last := nums[len(nums)-1]
	if last >= 1<<(8*(5-len(nums))) {
		return "", hostErr(orig, "not a valid IPv4 address")
	}
	v |= last
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}).String(), nil
}

func normalizeIPv6(orig, s string) (string, error) {
	if strings.IndexByte(s, '%') >= 0 {
		return "", hostErr(orig, "IPv6 zones are not accepted through a proxy")
	}
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is6() {
		return "", hostErr(orig, "not a valid IPv6 address")
	}
	if a.Is4In6() {
		return a.Unmap().String(), nil
	}
	return a.String(), nil
}

// ErrNoPort is returned by SplitHostPort for an authority without a port
// where one is required (CONNECT).
var ErrNoPort = errors.New("missing port")

// SplitHostPort splits a request authority ("host", "host:port",
// "[v6]:port") into a normalised host and a port. defaultPort is used when
// the authority has none; 0 makes a missing port an error.
func SplitHostPort(authority string, defaultPort uint16) (string, uint16, error) {
	host, portStr := authority, ""
	if strings.HasPrefix(authority, "[") {
		end := strings.IndexByte(authority, ']')
		if end < 0 {
			return "", 0, hostErr(authority, "unterminated IPv6 literal")
		}
		host = authority[:end+1]
		rest := authority[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return "", 0, hostErr(authority, "unexpected text after IPv6 literal")
			}
			portStr = rest[1:]
		}
	} else if i := strings.LastIndexByte(authority, ':'); i >= 0 {
		if strings.IndexByte(authority[:i], ':') >= 0 {
			return "", 0, hostErr(authority, "IPv6 literals must be in brackets")
		}
		host, portStr = authority[:i], authority[i+1:]
	}
	var port uint16
	if portStr == "" {
		if defaultPort == 0 {
			return "", 0, hostErr(authority, ErrNoPort.Error())
		}
		port = defaultPort
	} else {
		p, err := strconv.ParseUint(portStr, 10, 16)
		if err != nil || p == 0 {
			return "", 0, hostErr(authority, "invalid port")
		}
		port = uint16(p)
	}
	h, err := NormalizeHost(host)
	if err != nil {
		return "", 0, err
	}
	return h, port, nil
}

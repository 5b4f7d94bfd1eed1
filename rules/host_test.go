package rules

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizeHost(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	name253 := strings.Repeat(label63+".", 3) + strings.Repeat("b", 61) // 4*63+1 = 253
	tests := []struct {
		name, in, want, err string
	}{
		{"canonical", "example.com", "example.com", ""},
		{"single label", "intranet", "intranet", ""},
		{"upper case", "Example.COM", "example.com", ""},
		{"trailing dot", "example.com.", "example.com", ""},
		{"upper case and trailing dot", "WWW.Example.Com.", "www.example.com", ""},
		{"double trailing dot", "example.com..", "", "empty label"},
		{"leading dot", ".example.com", "", "empty label"},
		{"empty label", "a..example.com", "", "empty label"},
		{"only a dot", ".", "", "empty host"},
		{"underscore and hyphen", "_dmarc.my-host.example", "_dmarc.my-host.example", ""},
		{"IDN", "bücher.de", "xn--bcher-kva.de", ""},
		{"IDN upper case", "BÜCHER.de", "xn--bcher-kva.de", ""},
		{"IDN trailing dot", "bücher.de.", "xn--bcher-kva.de", ""},
		{"IDN Japanese", "例え.テスト", "xn--r8jz45g.xn--zckzah", ""},
		{"full-width letters", "ＥＸＡＭＰＬＥ.com", "example.com", ""},
		{"full-width stop", "example．com", "example.com", ""},
		{"A-label is kept", "xn--bcher-kva.de", "xn--bcher-kva.de", ""},
		{"invalid IDN", "a\u200db.example", "", "not a valid internationalised domain name"},
		{"IPv4", "192.0.2.1", "192.0.2.1", ""},
		{"IPv4 trailing dot", "192.0.2.1.", "192.0.2.1", ""},
		{"IPv4 hex and short", "0x7f.1", "127.0.0.1", ""},
		{"IPv4 hex upper case", "0X7F.0X0.0X0.0X1", "127.0.0.1", ""},
		{"IPv4 one number", "2130706433", "127.0.0.1", ""},
		{"IPv4 octal", "0177.0.0.1", "127.0.0.1", ""},
		{"IPv4 leading zeros are octal", "010.010.010.010", "8.8.8.8", ""},
		{"IPv4 three parts", "10.1.258", "10.1.1.2", ""},
		{"IPv4 zero", "0", "0.0.0.0", ""},
		{"IPv4 bare 0x", "0x", "0.0.0.0", ""},
		{"IPv4 max", "4294967295", "255.255.255.255", ""},
		{"IPv4 full-width digits", "１２７.0.0.1", "127.0.0.1", ""},
		{"IPv4 part over 255", "1.2.3.256", "", "not a valid IPv4 address"},
		{"IPv4 five parts", "1.2.3.4.5", "", "not a valid IPv4 address"},
		{"IPv4 one number too big", "4294967296", "", "not a valid IPv4 address"},
		{"IPv4 leading part too big", "256.1", "", "not a valid IPv4 address"},
		{"IPv4 bad octal", "09.1.1.1", "", "not a valid IPv4 address"},
		{"IPv4 empty part", "1..1", "", "empty label"},
		{"name ending in a number", "example.123", "", "not a valid IPv4 address"},
		{"name ending in hex", "example.0x1f", "", "not a valid IPv4 address"},
		{"hex-looking last label is a name", "example.0xg", "example.0xg", ""},
		{"number first is a name", "123.example", "123.example", ""},
		{"IPv6 in brackets", "[2001:DB8::1]", "2001:db8::1", ""},
		{"IPv6 without brackets", "2001:db8:0:0:0:0:0:1", "2001:db8::1", ""},
		{"IPv6 loopback", "[::1]", "::1", ""},
		{"IPv4-mapped IPv6", "[::ffff:192.0.2.1]", "192.0.2.1", ""},
		{"IPv4-mapped IPv6 in hex", "[::ffff:c000:201]", "192.0.2.1", ""},
		{"IPv6 zone", "[fe80::1%eth0]", "", "IPv6 zones are not accepted through a proxy"},
		{"IPv6 encoded zone", "[fe80::1%25eth0]", "", "IPv6 zones are not accepted through a proxy"},
		{"IPv6 unterminated", "[2001:db8::1", "", "unterminated IPv6 literal"},
		{"IPv6 invalid", "[2001:db8:::1]", "", "not a valid IPv6 address"},
		{"IPv4 in brackets", "[192.0.2.1]", "", "not a valid IPv6 address"},
		{"empty brackets", "[]", "", "not a valid IPv6 address"},
		{"label of 63", label63 + ".example", label63 + ".example", ""},
		{"label of 64", label63 + "a.example", "", "a label is longer than 63 bytes"},
		{"label of 64 upper case", strings.ToUpper(label63) + "A.example", "", "a label is longer than 63 bytes"},
		{"name of 253", name253, name253, ""},
		{"name of 253 with a trailing dot", name253 + ".", name253, ""},
		{"name of 254", name253 + "b", "", "longer than 253 bytes"},
		{"space", "exa mple.com", "", `character ' ' is not allowed in a host name`},
		{"slash", "example.com/upload", "", `character '/' is not allowed in a host name`},
		{"at sign", "user@example.com", "", `character '@' is not allowed in a host name`},
		{"NUL", "example.com\x00.evil", "", `character '\x00' is not allowed in a host name`},
		{"percent", "exa%41mple.com", "", `character '%' is not allowed in a host name`},
		{"empty", "", "", "empty host"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := NormalizeHost(tt.in)
			if tt.err != "" {
				var he *HostError
				if !errors.As(err, &he) || he.Reason != tt.err || he.Host != tt.in {
					t.Fatalf("NormalizeHost(%q) = %q, %v; want error %q", tt.in, got, err, tt.err)
				}
				if got != "" {
					t.Errorf("a failed normalisation returned %q", got)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeHost(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			// The output is canonical: normalising it again changes nothing.
			if again, err := NormalizeHost(got); err != nil || again != got {
				t.Errorf("NormalizeHost(%q) = %q, %v; not a fixed point", got, again, err)
			}
		})
	}
}

func TestHostErrorMessage(t *testing.T) {
	_, err := NormalizeHost("a b")
	if got, want := err.Error(), `invalid host "a b": character ' ' is not allowed in a host name`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestNormalizeHostNoAlloc: the common case, a host that is already
// canonical, costs no allocation on the request path.
func TestNormalizeHostNoAlloc(t *testing.T) {
	for _, h := range []string{"example.com", "obs.line-scdn.net", "192.0.2.1", "xn--bcher-kva.de"} {
		t.Run(h, func(t *testing.T) {
			var out string
			allocs := testing.AllocsPerRun(100, func() {
				out, _ = NormalizeHost(h)
			})
			if allocs != 0 {
				t.Errorf("%v allocations", allocs)
			}
			if out != h {
				t.Errorf("got %q", out)
			}
		})
	}
}

func TestSplitHostPort(t *testing.T) {
	tests := []struct {
		name        string
		in          string
		defaultPort uint16
		host        string
		port        uint16
		err         string
	}{
		{"host and port", "example.com:8443", 443, "example.com", 8443, ""},
		{"default port", "example.com", 443, "example.com", 443, ""},
		{"default port 80", "Example.COM", 80, "example.com", 80, ""},
		{"empty port takes the default", "example.com:", 80, "example.com", 80, ""},
		{"normalised host", "Bücher.DE.:443", 0, "xn--bcher-kva.de", 443, ""},
		{"IPv4", "192.0.2.1:22", 0, "192.0.2.1", 22, ""},
		{"WHATWG IPv4", "0x7f.1:80", 0, "127.0.0.1", 80, ""},
		{"IPv6 with port", "[2001:db8::1]:443", 0, "2001:db8::1", 443, ""},
		{"IPv6 without port", "[2001:db8::1]", 443, "2001:db8::1", 443, ""},
		{"IPv4-mapped IPv6", "[::ffff:10.0.0.1]:443", 0, "10.0.0.1", 443, ""},
		{"max port", "example.com:65535", 0, "example.com", 65535, ""},
		{"CONNECT without port", "example.com", 0, "", 0, `invalid host "example.com": missing port`},
		{"CONNECT IPv6 without port", "[::1]", 0, "", 0, `invalid host "[::1]": missing port`},
		{"port 0", "example.com:0", 443, "", 0, `invalid host "example.com:0": invalid port`},
		{"port 65536", "example.com:65536", 443, "", 0, `invalid host "example.com:65536": invalid port`},
		{"port not a number", "example.com:https", 443, "", 0, `invalid host "example.com:https": invalid port`},
		{"negative port", "example.com:-1", 443, "", 0, `invalid host "example.com:-1": invalid port`},
		{"signed port", "example.com:+443", 443, "", 0, `invalid host "example.com:+443": invalid port`},
		{"IPv6 without brackets", "2001:db8::1:443", 443, "", 0, `invalid host "2001:db8::1:443": IPv6 literals must be in brackets`},
		{"unterminated IPv6", "[2001:db8::1:443", 443, "", 0, `invalid host "[2001:db8::1:443": unterminated IPv6 literal`},
		{"text after IPv6", "[::1]x443", 443, "", 0, `invalid host "[::1]x443": unexpected text after IPv6 literal`},
		{"bad host", "exa mple.com:443", 443, "", 0, `invalid host "exa mple.com": character ' ' is not allowed in a host name`},
		{"empty host", ":443", 443, "", 0, `invalid host "": empty host`},
		{"userinfo", "user@example.com:443", 443, "", 0, `invalid host "user@example.com": character '@' is not allowed in a host name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			host, port, err := SplitHostPort(tt.in, tt.defaultPort)
			gotErr := ""
			if err != nil {
				gotErr = err.Error()
				var he *HostError
				if !errors.As(err, &he) {
					t.Errorf("error is %T, want *HostError", err)
				}
			}
			if host != tt.host || port != tt.port || gotErr != tt.err {
				t.Errorf("SplitHostPort(%q, %d) = %q, %d, %q; want %q, %d, %q", tt.in, tt.defaultPort, host, port, gotErr, tt.host, tt.port, tt.err)
			}
		})
	}
}

package geo

import (
	"net/netip"
	"testing"
	"unsafe"
)

func TestCodeIndex(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" for not a country
	}{
		{"JP", "JP"},
		{"jp", "JP"},
		{"Kr", "KR"},
		{"AA", "AA"},
		{"ZY", "ZY"},
		{"ZZ", ""}, // "unknown region" (CLDR, DB-IP)
		{"zz", ""},
		{"", ""},
		{"J", ""},
		{"JPN", ""},
		{"J1", ""},
		{"1J", ""},
		{"日本", ""},
		{"Japan", ""},
		{"@[", ""},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			i := codeIndex(tt.in)
			got := ""
			if i != 0 {
				got = codes[i-1]
			}
			if got != tt.want {
				t.Errorf("codeIndex(%q) = %d (%q), want %q", tt.in, i, got, tt.want)
			}
		})
	}
}

func TestCodesShareOneString(t *testing.T) {
	if len(codes) != 676 || codes[0] != "AA" || codes[675] != "ZZ" || codes[codeIndex("JP")-1] != "JP" {
		t.Fatalf("codes table malformed: %q %q %q", codes[0], codes[675], codes[codeIndex("JP")-1])
	}
	base := uintptr(unsafe.Pointer(unsafe.StringData(codes[0])))
	for i, c := range codes {
		if p := uintptr(unsafe.Pointer(unsafe.StringData(c))); p != base+uintptr(2*i) {
			t.Fatalf("codes[%d] = %q is not sliced from the shared string", i, c)
		}
	}
}

func TestParseASN(t *testing.T) {
	tests := []struct {
		in   string
		want uint32
	}{
		{"AS13335", 13335},
		{"as2497", 2497},
		{"4713", 4713},
		{"AS4294967295", 4294967295},
		{"AS4294967296", 0},
		{"AS99999999999", 0},
		{"AS", 0},
		{"", 0},
		{"ASX1", 0},
		{"AS-1", 0},
		{"AS 1", 0},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := parseASN(tt.in); got != tt.want {
				t.Errorf("parseASN(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestNormalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"192.0.2.1", "192.0.2.1"},
		{"::ffff:192.0.2.1", "192.0.2.1"},
		{"fe80::1%eth0", "fe80::1"},
		{"2001:db8::1", "2001:db8::1"},
		{"::1", "::1"},
		{"::192.0.2.1", "::c000:201"}, // IPv4-compatible (deprecated) stays IPv6
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := normalize(netip.MustParseAddr(tt.in)); got != netip.MustParseAddr(tt.want) {
				t.Errorf("normalize(%s) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
	if got := normalize(netip.Addr{}); got.IsValid() {
		t.Errorf("normalize(zero) = %s, want the zero Addr", got)
	}
}

// TestSpecialMatchesNetip checks the word-level special() against netip's
// predicates on boundaries of every range.
func TestSpecialMatchesNetip(t *testing.T) {
	addrs := []string{
		"0.0.0.0", "0.0.0.1", "9.255.255.255", "10.0.0.0", "10.255.255.255", "11.0.0.0",
		"126.255.255.255", "127.0.0.0", "127.255.255.255", "128.0.0.0",
		"169.253.255.255", "169.254.0.0", "169.254.255.255", "169.255.0.0",
		"172.15.255.255", "172.16.0.0", "172.31.255.255", "172.32.0.0",
		"192.167.255.255", "192.168.0.0", "192.168.255.255", "192.169.0.0",
		"223.255.255.255", "224.0.0.0", "239.255.255.255", "240.0.0.0", "255.255.255.255",
		"100.64.0.1", "8.8.8.8",
		"::", "::1", "::2", "::ffff:10.0.0.1",
		"fbff:ffff::", "fc00::", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fe00::",
		"fe7f:ffff::", "fe80::", "febf:ffff:ffff:ffff::", "fec0::",
		"feff::", "ff00::", "ff02::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		"2001:db8::1", "2001:4860:4860::8888",
	}
	for _, s := range addrs {
		a := normalize(netip.MustParseAddr(s)) // as lookup sees it
		want := a.IsPrivate() || a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsMulticast() || a.IsUnspecified()
		b := a.As16()
		hi := uint64(b[0])<<56 | uint64(b[1])<<48 | uint64(b[2])<<40 | uint64(b[3])<<32 |
			uint64(b[4])<<24 | uint64(b[5])<<16 | uint64(b[6])<<8 | uint64(b[7])
		lo := uint64(b[8])<<56 | uint64(b[9])<<48 | uint64(b[10])<<40 | uint64(b[11])<<32 |
			uint64(b[12])<<24 | uint64(b[13])<<16 | uint64(b[14])<<8 | uint64(b[15])
		if got := special(hi, lo, a.Is4()); got != want {
			t.Errorf("special(%s) = %v, want %v", s, got, want)
		}
	}
}

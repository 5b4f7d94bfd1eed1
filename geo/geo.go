package geo

import (
	"net/netip"
	"time"
)

// Country values that are not ISO codes. Rules and metrics use them as
// country labels, so they are lower case to never collide with a code.
const (
	// CountryInternal is the country of a private, loopback or other
	// internal address that the database does not place: traffic that stays
	// inside the building's network.
	CountryInternal = "internal"
	// CountryUnknown is the country of any other address the database does
	// not place. sekisho treats it as foreign (design.md: unknown is
	// foreign), so an address we cannot place never receives an upload by
	// accident.
	CountryUnknown = "unknown"
)

// Location is where an address is, reduced to what the rules need.
//
// Country is an upper-case ISO 3166-1 alpha-2 code ("JP"), or CountryInternal
// or CountryUnknown. The strings are interned: comparing and storing them is
// cheap and a lookup never allocates one. ASN is the autonomous system number
// when the database has one (IPinfo Lite, GeoIP2 Enterprise), else 0.
type Location struct {
	Country string
	ASN     uint32
}

// Info describes an opened database, for logs, the admin page and the
// sekisho_geo_database_info metric, so that an operator can tell which data
// the proxy is deciding with.
type Info struct {
	// Source is the file path, or a description of the embedded default.
	Source string
	// DatabaseType is the database_type from the metadata, e.g.
	// "GeoLite2-Country"; vendors name their files freely, so it is shown
	// but the schema is probed from the records.
	DatabaseType string
	// Schema is the record layout sekisho decodes, probed from the records:
	// "geoip2" (GeoIP2/GeoLite2 Country, City, Enterprise), "dbip" (DB-IP,
	// same layout), "ipinfo" (IPinfo Lite: country_code, asn) or
	// "ip-location-db" (country_code). It is a label of
	// sekisho_geo_database_info, so the set is small and fixed.
	Schema string
	// BuildTime is when the vendor built the database; stale data places
	// re-assigned networks wrongly, so it is exported as a metric.
	BuildTime time.Time
	// IPVersion is 4 for an IPv4-only database (IPv6 addresses are then
	// never placed) or 6.
	IPVersion uint
	// Description is the English (or first) description in the metadata.
	Description string
	// SHA256 is the hex digest of the database bytes. ReloadFile compares
	// it to skip reloading an unchanged file.
	SHA256 string
}

// Schema names reported in Info.Schema and the database_info metric.
const (
	// schemaGeoIP2 is MaxMind's GeoIP2/GeoLite2 Country, City and
	// Enterprise layout: country.iso_code, registered_country.iso_code.
	schemaGeoIP2 = "geoip2"
	// schemaDBIP is DB-IP's layout, the same as GeoIP2 for the country.
	schemaDBIP = "dbip"
	// schemaIPinfo is IPinfo's flat layout: country_code and asn ("AS13335").
	schemaIPinfo = "ipinfo"
	// schemaIPLocationDB is ip-location-db's flat layout: country_code.
	schemaIPLocationDB = "ip-location-db"
)

// codes holds every two-letter code, all sliced from one string, so that
// returning a country never allocates and equal countries share memory.
var codes = func() (t [26 * 26]string) {
	var b [26 * 26 * 2]byte
	for i := range 26 * 26 {
		b[2*i] = 'A' + byte(i/26)
		b[2*i+1] = 'A' + byte(i%26)
	}
	s := string(b[:])
	for i := range t {
		t[i] = s[2*i : 2*i+2]
	}
	return t
}()

// codeZZ is the index of "ZZ", the user-assigned code that CLDR and DB-IP use
// for "unknown region": it places nothing.
const codeZZ = 25*26 + 25

// codeIndex maps a two-letter code (either case) to its index in codes plus
// one; 0 means "not a country" (empty, malformed or ZZ).
func codeIndex(s string) uint16 {
	if len(s) != 2 {
		return 0
	}
	a, b := upper(s[0]), upper(s[1])
	if a < 'A' || a > 'Z' || b < 'A' || b > 'Z' {
		return 0
	}
	i := uint16(a-'A')*26 + uint16(b-'A')
	if i == codeZZ {
		return 0
	}
	return i + 1
}

func upper(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - ('a' - 'A')
	}
	return c
}

// parseASN reads "AS13335", "as13335" or "13335"; anything else is 0.
func parseASN(s string) uint32 {
	if len(s) >= 2 && upper(s[0]) == 'A' && upper(s[1]) == 'S' {
		s = s[2:]
	}
	if s == "" || len(s) > 10 {
		return 0
	}
	var n uint64
	for i := range len(s) {
		c := s[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + uint64(c-'0')
	}
	if n > 1<<32-1 {
		return 0
	}
	return uint32(n)
}

// normalize turns an address into the form both the database and prefix
// checks expect: 4in6 (::ffff:1.2.3.4) becomes IPv4, because the mmdb files
// we read do not all alias ::ffff:0:0/96 to their IPv4 tree, and
// netip.Prefix.Contains never matches a zoned or mapped address.
func normalize(addr netip.Addr) netip.Addr {
	if addr.Is4In6() {
		return addr.Unmap()
	}
	if addr.Zone() != "" {
		return addr.WithZone("")
	}
	return addr
}

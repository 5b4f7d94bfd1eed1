// Package geotest builds small MaxMind DB (.mmdb) files for tests, in each
// schema that package geo reads, with github.com/maxmind/mmdbwriter (as
// CoreDNS does for its geoip plugin).
//
// Fixtures place loopback ranges (127.0.1.0/24 is "Japan", 127.0.2.0/24
// "Korea"), so that end-to-end tests can run real upstream servers on this
// machine and still see them as domestic or foreign. Loopback is reserved, so
// the fixtures are built with mmdbwriter's IncludeReservedNetworks.
//
// Import it only from tests.
package geotest

import (
	"bytes"
	"cmp"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// Default maps the loopback test ranges to countries. 127.0.5.0/24 is
// deliberately absent: the database does not place it, so a Store answers
// "internal" (loopback) and a Database answers not placed.
//
// ::1/128 is stored where an IPv6 MaxMind DB keeps it: inside the ::/96
// subtree that also holds IPv4, so it shares its node with 0.0.0.1.
//
// Tests must not modify it; copy it with maps.Clone to vary it.
var Default = map[string]string{
	"127.0.1.0/24": "JP",
	"127.0.2.0/24": "KR",
	"127.0.3.0/24": "CN",
	"127.0.4.0/24": "US",
	"::1/128":      "JP",
}

// Schema is a record layout of a database vendor.
type Schema int

// The schemas geo reads, and one it must refuse.
const (
	// CountryCode is ip-location-db's layout, {"country_code": "JP"}, with
	// its metadata: database_type "country ipvAll", an empty description,
	// 24-bit records and no IPv4 aliasing (so ::ffff:127.0.1.1 is not in
	// the tree and must be unmapped before lookup).
	CountryCode Schema = iota
	// GeoIP2Country is GeoLite2-Country: continent, country and
	// registered_country maps with iso_code and names; IPv4 aliased into
	// ::ffff:0:0/96, 2001::/32 and 2002::/16 as MaxMind does.
	GeoIP2Country
	// GeoIP2City is GeoLite2-City: the Country layout plus city, location,
	// postal and subdivisions; 28-bit records.
	GeoIP2City
	// DBIP is DB-IP's "DBIP-Country-Lite": continent and country maps.
	DBIP
	// IPinfoLite is IPinfo Lite ("ipinfo bundle_location_lite.mmdb"): flat
	// country_code, country (the name), continent and asn ("AS64500");
	// 32-bit records.
	IPinfoLite
	// ASNOnly is GeoLite2-ASN: autonomous_system_number and organization,
	// no country. geo must refuse it.
	ASNOnly
)

// String returns the Go name of the schema, for test names.
func (s Schema) String() string {
	if sp, ok := specs[s]; ok {
		return sp.name
	}
	return fmt.Sprintf("Schema(%d)", int(s))
}

// BuildEpoch is the build time written into every fixture
// (2026-01-02T03:04:05Z), so that Build is deterministic.
const BuildEpoch int64 = 1767323045

// FirstASN is the ASN of the first entry; see Build.
const FirstASN = 64500

type spec struct {
	name         string
	file         string
	databaseType string
	description  map[string]string
	languages    []string
	recordSize   int
	noAliasing   bool
	record       func(country string, asn uint32) mmdbtype.Map
}

var specs = map[Schema]spec{
	CountryCode: {
		name: "CountryCode", file: "geo-whois-asn-country.mmdb",
		databaseType: "country ipvAll", recordSize: 24, noAliasing: true,
		record: func(c string, _ uint32) mmdbtype.Map {
			return mmdbtype.Map{"country_code": mmdbtype.String(c)}
		},
	},
	GeoIP2Country: {
		name: "GeoIP2Country", file: "GeoLite2-Country.mmdb",
		databaseType: "GeoLite2-Country", recordSize: 24,
		description: map[string]string{"en": "sekisho geotest GeoLite2-Country fixture"},
		languages:   []string{"en", "ja"},
		record: func(c string, _ uint32) mmdbtype.Map {
			return mmdbtype.Map{
				"continent":          continentRecord(c),
				"country":            countryRecord(c),
				"registered_country": countryRecord(c),
			}
		},
	},
	GeoIP2City: {
		name: "GeoIP2City", file: "GeoLite2-City.mmdb",
		databaseType: "GeoLite2-City", recordSize: 28,
		description: map[string]string{"en": "sekisho geotest GeoLite2-City fixture"},
		languages:   []string{"en", "ja"},
		record:      cityRecord,
	},
	DBIP: {
		name: "DBIP", file: "dbip-country-lite.mmdb",
		databaseType: "DBIP-Country-Lite", recordSize: 24,
		description: map[string]string{"en": "sekisho geotest DB-IP fixture"},
		languages:   []string{"en", "ja"},
		record: func(c string, _ uint32) mmdbtype.Map {
			country := countryRecord(c)
			country["is_in_european_union"] = mmdbtype.Bool(false)
			return mmdbtype.Map{"continent": continentRecord(c), "country": country}
		},
	},
	IPinfoLite: {
		name: "IPinfoLite", file: "ipinfo_lite.mmdb",
		databaseType: "ipinfo bundle_location_lite.mmdb", recordSize: 32,
		description: map[string]string{"en": "sekisho geotest IPinfo Lite fixture"},
		record: func(c string, asn uint32) mmdbtype.Map {
			k := known(c)
			return mmdbtype.Map{
				"asn":            mmdbtype.String(fmt.Sprintf("AS%d", asn)),
				"as_name":        mmdbtype.String(fmt.Sprintf("Example AS%d", asn)),
				"as_domain":      mmdbtype.String(fmt.Sprintf("as%d.example", asn)),
				"country_code":   mmdbtype.String(c),
				"country":        mmdbtype.String(k.en),
				"continent_code": mmdbtype.String(k.continent),
				"continent":      mmdbtype.String(k.continentName),
			}
		},
	},
	ASNOnly: {
		name: "ASNOnly", file: "GeoLite2-ASN.mmdb",
		databaseType: "GeoLite2-ASN", recordSize: 24,
		description: map[string]string{"en": "sekisho geotest GeoLite2-ASN fixture"},
		record: func(_ string, asn uint32) mmdbtype.Map {
			return mmdbtype.Map{
				"autonomous_system_number":       mmdbtype.Uint32(asn),
				"autonomous_system_organization": mmdbtype.String(fmt.Sprintf("Example AS%d", asn)),
			}
		},
	},
}

type countryInfo struct {
	en, ja, continent, continentName string
	geonameID                        uint32
}

var countries = map[string]countryInfo{
	"JP": {"Japan", "日本", "AS", "Asia", 1861060},
	"KR": {"South Korea", "大韓民国", "AS", "Asia", 1835841},
	"CN": {"China", "中国", "AS", "Asia", 1814991},
	"US": {"United States", "アメリカ合衆国", "NA", "North America", 6252001},
	"DE": {"Germany", "ドイツ連邦共和国", "EU", "Europe", 2921044},
	"AU": {"Australia", "オーストラリア", "OC", "Oceania", 2077456},
}

var continentIDs = map[string]uint32{
	"AS": 6255147, "NA": 6255149, "EU": 6255148, "OC": 6255151,
}

// known returns what we know of code; an unknown code (or "") is named by
// itself, so a fixture can hold any string the tests need.
func known(code string) countryInfo {
	if k, ok := countries[code]; ok {
		return k
	}
	return countryInfo{en: code, ja: code, continent: "AN", continentName: "Antarctica"}
}

func names(en, ja string) mmdbtype.Map {
	return mmdbtype.Map{"en": mmdbtype.String(en), "ja": mmdbtype.String(ja)}
}

func countryRecord(c string) mmdbtype.Map {
	k := known(c)
	return mmdbtype.Map{
		"geoname_id": mmdbtype.Uint32(k.geonameID),
		"iso_code":   mmdbtype.String(c),
		"names":      names(k.en, k.ja),
	}
}

func continentRecord(c string) mmdbtype.Map {
	k := known(c)
	return mmdbtype.Map{
		"code":       mmdbtype.String(k.continent),
		"geoname_id": mmdbtype.Uint32(continentIDs[k.continent]),
		"names":      names(k.continentName, k.continentName),
	}
}

func cityRecord(c string, _ uint32) mmdbtype.Map {
	k := known(c)
	return mmdbtype.Map{
		"city": mmdbtype.Map{
			"geoname_id": mmdbtype.Uint32(k.geonameID + 1),
			"names":      names("Capital of "+k.en, k.ja+"の首都"),
		},
		"continent": continentRecord(c),
		"country":   countryRecord(c),
		"location": mmdbtype.Map{
			"accuracy_radius": mmdbtype.Uint16(50),
			"latitude":        mmdbtype.Float64(35.6895),
			"longitude":       mmdbtype.Float64(139.6917),
			"time_zone":       mmdbtype.String("Asia/Tokyo"),
		},
		"postal":             mmdbtype.Map{"code": mmdbtype.String("100-0001")},
		"registered_country": countryRecord(c),
		"subdivisions": mmdbtype.Slice{mmdbtype.Map{
			"geoname_id": mmdbtype.Uint32(k.geonameID + 2),
			"iso_code":   mmdbtype.String("13"),
			"names":      names("Capital region of "+k.en, k.ja),
		}},
	}
}

// Build returns the bytes of a database in schema that maps each CIDR of
// entries to its country code (written as given, so "" or "jp" can be tested).
//
// Entries are inserted from the least to the most specific prefix (then by
// address), so a more specific prefix wins where they overlap; the i-th entry
// in that order gets ASN FirstASN+i in the schemas that carry one (IPinfoLite,
// ASNOnly). For Default that is 127.0.1.0/24 → 64500 ... 127.0.4.0/24 → 64503,
// ::1/128 → 64504. IPv4 entries go where MaxMind DB readers look them up, in
// the ::/96 subtree. The same input always gives the same bytes.
func Build(schema Schema, entries map[string]string) ([]byte, error) {
	sp, ok := specs[schema]
	if !ok {
		return nil, fmt.Errorf("geotest: unknown schema %d", int(schema))
	}
	prefixes := make([]netip.Prefix, 0, len(entries))
	byPrefix := make(map[netip.Prefix]string, len(entries))
	for cidr, country := range entries {
		p, err := netip.ParsePrefix(cidr)
		if err != nil {
			return nil, fmt.Errorf("geotest: entry %q: %w", cidr, err)
		}
		p = p.Masked()
		if _, dup := byPrefix[p]; dup {
			return nil, fmt.Errorf("geotest: entry %q: duplicate network %s", cidr, p)
		}
		byPrefix[p] = country
		prefixes = append(prefixes, p)
	}
	slices.SortFunc(prefixes, func(a, b netip.Prefix) int {
		return cmp.Or(cmp.Compare(treeBits(a), treeBits(b)), a.Addr().Compare(b.Addr()))
	})

	tree, err := mmdbwriter.New(mmdbwriter.Options{
		BuildEpoch:              BuildEpoch,
		DatabaseType:            sp.databaseType,
		Description:             sp.description,
		Languages:               sp.languages,
		RecordSize:              sp.recordSize,
		IncludeReservedNetworks: true, // loopback is reserved
		DisableIPv4Aliasing:     sp.noAliasing,
	})
	if err != nil {
		return nil, fmt.Errorf("geotest: %w", err)
	}
	for i, p := range prefixes {
		n := &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
		if err := tree.Insert(n, sp.record(byPrefix[p], uint32(FirstASN+i))); err != nil {
			return nil, fmt.Errorf("geotest: insert %s: %w", p, err)
		}
	}
	var buf bytes.Buffer
	if _, err := tree.WriteTo(&buf); err != nil {
		return nil, fmt.Errorf("geotest: write: %w", err)
	}
	return buf.Bytes(), nil
}

// treeBits is the prefix length in the IPv6 tree, where IPv4 sits under ::/96.
func treeBits(p netip.Prefix) int {
	if p.Addr().Is4() {
		return p.Bits() + 96
	}
	return p.Bits()
}

// WriteFile builds a database (see Build) and puts it in dir under the
// vendor's usual file name (GeoLite2-Country.mmdb, ipinfo_lite.mmdb, ...),
// returning its path. It writes a temporary file and renames it into place, as
// geoipupdate does, so it can replace a database that is open (mapped)
// without changing the bytes under the old mapping.
func WriteFile(tb testing.TB, dir string, schema Schema, entries map[string]string) string {
	tb.Helper()
	data, err := Build(schema, entries)
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(dir, specs[schema].file)
	tmp, err := os.CreateTemp(dir, ".geotest-*.mmdb")
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		tb.Fatal(err)
	}
	if err := tmp.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		tb.Fatal(err)
	}
	return path
}

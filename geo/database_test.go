package geo

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/sekisho/sekisho/geo/geotest"
)

// want is an expected Database.Lookup answer.
type want struct {
	country string
	asn     uint32
	placed  bool
}

func checkLookup(t *testing.T, db *Database, addr string, w want) {
	t.Helper()
	loc, ok := db.Lookup(netip.MustParseAddr(addr))
	wantLoc := Location{Country: w.country, ASN: w.asn}
	if !w.placed {
		wantLoc.Country = CountryUnknown
	}
	if loc != wantLoc || ok != w.placed {
		t.Errorf("Lookup(%s) = %+v, %v; want %+v, %v", addr, loc, ok, wantLoc, w.placed)
	}
}

func TestOpenSchemas(t *testing.T) {
	tests := []struct {
		schema       geotest.Schema
		databaseType string
		wantSchema   string
		description  string
		asn          bool // the schema carries ASNs
	}{
		{geotest.CountryCode, "country ipvAll", schemaIPLocationDB, "", false},
		{geotest.GeoIP2Country, "GeoLite2-Country", schemaGeoIP2, "sekisho geotest GeoLite2-Country fixture", false},
		{geotest.GeoIP2City, "GeoLite2-City", schemaGeoIP2, "sekisho geotest GeoLite2-City fixture", false},
		{geotest.DBIP, "DBIP-Country-Lite", schemaDBIP, "sekisho geotest DB-IP fixture", false},
		{geotest.IPinfoLite, "ipinfo bundle_location_lite.mmdb", schemaIPinfo, "sekisho geotest IPinfo Lite fixture", true},
	}
	for _, tt := range tests {
		t.Run(tt.schema.String(), func(t *testing.T) {
			path := geotest.WriteFile(t, t.TempDir(), tt.schema, geotest.Default)
			db, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(raw)
			wantInfo := Info{
				Source:       path,
				DatabaseType: tt.databaseType,
				Schema:       tt.wantSchema,
				BuildTime:    time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
				IPVersion:    6,
				Description:  tt.description,
				SHA256:       hex.EncodeToString(sum[:]),
			}
			if got := db.Info(); got != wantInfo {
				t.Errorf("Info() = %+v\nwant     %+v", got, wantInfo)
			}

			asn := func(n uint32) uint32 {
				if tt.asn {
					return n
				}
				return 0
			}
			lookups := []struct {
				addr string
				want want
			}{
				{"127.0.1.1", want{"JP", asn(64500), true}},
				{"127.0.2.200", want{"KR", asn(64501), true}},
				{"127.0.3.1", want{"CN", asn(64502), true}},
				{"127.0.4.255", want{"US", asn(64503), true}},
				{"::1", want{"JP", asn(64504), true}},
				{"::ffff:127.0.2.1", want{"KR", asn(64501), true}},
				{"127.0.5.1", want{}}, // deliberately absent
				{"127.0.0.1", want{}}, // absent
				{"10.0.0.1", want{}},  // absent
				{"8.8.8.8", want{}},   // absent
				{"2001:db8::1", want{}},
				{"fe80::1%eth0", want{}},
			}
			for _, l := range lookups {
				t.Run(l.addr, func(t *testing.T) {
					checkLookup(t, db, l.addr, l.want)
					// Twice: the second answer comes from the cache.
					checkLookup(t, db, l.addr, l.want)
				})
			}

			s := NewStore(db, DefaultInternal(), nil)
			for addr, wantCountry := range map[string]string{
				"127.0.1.1":   "JP",
				"127.0.5.1":   CountryInternal, // loopback, not placed
				"192.168.0.1": CountryInternal,
				"fe80::1":     CountryInternal,
				"192.0.2.1":   CountryUnknown,
				"2001:db8::1": CountryUnknown,
			} {
				if got := s.Lookup(netip.MustParseAddr(addr)).Country; got != wantCountry {
					t.Errorf("Store.Lookup(%s).Country = %q, want %q", addr, got, wantCountry)
				}
			}
		})
	}
}

func TestOpenBytesMatchesOpen(t *testing.T) {
	data, err := geotest.Build(geotest.GeoIP2Country, geotest.Default)
	if err != nil {
		t.Fatal(err)
	}
	db, err := OpenBytes("fixture", data)
	if err != nil {
		t.Fatal(err)
	}
	if got := db.Info().Source; got != "fixture" {
		t.Errorf("Source = %q, want fixture", got)
	}
	checkLookup(t, db, "127.0.2.1", want{"KR", 0, true})
	checkLookup(t, db, "127.0.5.1", want{})
}

// TestMappedAddresses pins what mmdbwriter does with IPv4 in an IPv6 tree:
// IPv4 networks live under ::/96, and ::ffff:0:0/96 (with 2001::/32 and
// 2002::/16) is an alias of that subtree only when aliasing is on, as in
// MaxMind's files. ip-location-db's files have no alias, so geo unmaps first.
func TestMappedAddresses(t *testing.T) {
	tests := []struct {
		schema      geotest.Schema
		rawFindsMap bool // the tree itself answers ::ffff:127.0.1.1
	}{
		{geotest.CountryCode, false},
		{geotest.GeoIP2Country, true},
	}
	for _, tt := range tests {
		t.Run(tt.schema.String(), func(t *testing.T) {
			data, err := geotest.Build(tt.schema, geotest.Default)
			if err != nil {
				t.Fatal(err)
			}
			db, err := OpenBytes("fixture", data)
			if err != nil {
				t.Fatal(err)
			}
			mapped := netip.MustParseAddr("::ffff:127.0.1.1")
			if got := db.reader.Lookup(mapped).Found(); got != tt.rawFindsMap {
				t.Errorf("raw tree lookup of %s found = %v, want %v", mapped, got, tt.rawFindsMap)
			}
			if got := db.reader.Lookup(netip.MustParseAddr("::127.0.1.1")).Found(); !got {
				t.Errorf("IPv4 data is not under ::/96")
			}
			checkLookup(t, db, "::ffff:127.0.1.1", want{"JP", 0, true})
			checkLookup(t, db, "127.0.1.1", want{"JP", 0, true})
			// ::1 and 0.0.0.1 are one node of an IPv6 MaxMind DB.
			checkLookup(t, db, "0.0.0.1", want{"JP", 0, true})
		})
	}
}

// buildRecords writes a database mapping networks to hand-made records, for
// the record shapes geotest does not produce.
func buildRecords(t *testing.T, opts mmdbwriter.Options, records map[string]mmdbtype.DataType) []byte {
	t.Helper()
	opts.IncludeReservedNetworks = true
	opts.BuildEpoch = geotest.BuildEpoch
	tree, err := mmdbwriter.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	for cidr, rec := range records {
		_, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		if err := tree.Insert(n, rec); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if _, err := tree.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func iso(code mmdbtype.DataType) mmdbtype.Map { return mmdbtype.Map{"iso_code": code} }

func TestRecordShapes(t *testing.T) {
	type addrWant struct {
		addr string
		want want
	}
	tests := []struct {
		name       string
		dbType     string
		records    map[string]mmdbtype.DataType
		wantSchema string
		lookups    []addrWant
	}{
		{
			name:   "geoip2",
			dbType: "GeoIP2-Enterprise",
			records: map[string]mmdbtype.DataType{
				// Only registered_country: use it.
				"127.0.1.0/24": mmdbtype.Map{"registered_country": iso(mmdbtype.String("JP"))},
				// Empty country: fall back to registered_country.
				"127.0.2.0/24": mmdbtype.Map{
					"country":            iso(mmdbtype.String("")),
					"registered_country": iso(mmdbtype.String("KR")),
				},
				// Empty country and nothing else: not placed.
				"127.0.3.0/24": mmdbtype.Map{"country": iso(mmdbtype.String(""))},
				// Continent only: not placed.
				"127.0.4.0/24": mmdbtype.Map{"continent": mmdbtype.Map{"code": mmdbtype.String("EU")}},
				// Lower case is accepted.
				"127.0.5.0/24": mmdbtype.Map{"country": iso(mmdbtype.String("de"))},
				// ZZ is "unknown region".
				"127.0.6.0/24": mmdbtype.Map{"country": iso(mmdbtype.String("ZZ"))},
				// country wins over registered_country.
				"127.0.7.0/24": mmdbtype.Map{
					"country":            iso(mmdbtype.String("US")),
					"registered_country": iso(mmdbtype.String("CN")),
				},
				// A code of the wrong type places nothing.
				"127.0.8.0/24": mmdbtype.Map{"country": iso(mmdbtype.Uint32(392))},
				// Enterprise carries the ASN in traits.
				"127.0.9.0/24": mmdbtype.Map{
					"country": iso(mmdbtype.String("AU")),
					"traits":  mmdbtype.Map{"autonomous_system_number": mmdbtype.Uint32(2497)},
				},
				// represented_country is not where the address is.
				"127.0.10.0/24": mmdbtype.Map{
					"country":             iso(mmdbtype.String("JP")),
					"represented_country": iso(mmdbtype.String("US")),
				},
				"127.0.11.0/24": mmdbtype.Map{},
				// country that is not a map is skipped.
				"127.0.12.0/24": mmdbtype.Map{
					"country":            mmdbtype.String("JP"),
					"registered_country": iso(mmdbtype.String("KR")),
				},
			},
			wantSchema: schemaGeoIP2,
			lookups: []addrWant{
				{"127.0.1.1", want{"JP", 0, true}},
				{"127.0.2.1", want{"KR", 0, true}},
				{"127.0.3.1", want{}},
				{"127.0.4.1", want{}},
				{"127.0.5.1", want{"DE", 0, true}},
				{"127.0.6.1", want{}},
				{"127.0.7.1", want{"US", 0, true}},
				{"127.0.8.1", want{}},
				{"127.0.9.1", want{"AU", 2497, true}},
				{"127.0.10.1", want{"JP", 0, true}},
				{"127.0.11.1", want{}},
				{"127.0.12.1", want{"KR", 0, true}},
			},
		},
		{
			name:   "ip-location-db",
			dbType: "country ipvAll",
			records: map[string]mmdbtype.DataType{
				"127.0.1.0/24": mmdbtype.Map{"country_code": mmdbtype.String("jp")},
				"127.0.2.0/24": mmdbtype.Map{"country_code": mmdbtype.String("")},
				"127.0.3.0/24": mmdbtype.Map{"country_code": mmdbtype.String("ZZ")},
				"127.0.4.0/24": mmdbtype.Map{"other": mmdbtype.String("x")},
				"127.0.5.0/24": mmdbtype.Map{"country_code": mmdbtype.String("KOR")},
			},
			wantSchema: schemaIPLocationDB,
			lookups: []addrWant{
				{"127.0.1.1", want{"JP", 0, true}},
				{"127.0.2.1", want{}},
				{"127.0.3.1", want{}},
				{"127.0.4.1", want{}},
				{"127.0.5.1", want{}},
			},
		},
		{
			name:   "ipinfo-lite",
			dbType: "ipinfo bundle_location_lite.mmdb",
			records: map[string]mmdbtype.DataType{
				"127.0.1.0/24": mmdbtype.Map{
					"country_code": mmdbtype.String("JP"), "country": mmdbtype.String("Japan"),
					"asn": mmdbtype.String("AS2497"),
				},
				// No country, but the ASN is still reported.
				"127.0.2.0/24": mmdbtype.Map{
					"country_code": mmdbtype.String(""), "country": mmdbtype.String(""),
					"asn": mmdbtype.String("AS64512"),
				},
				"127.0.3.0/24": mmdbtype.Map{
					"country_code": mmdbtype.String("US"), "asn": mmdbtype.Uint32(15169),
				},
				"127.0.4.0/24": mmdbtype.Map{
					"country_code": mmdbtype.String("DE"), "asn": mmdbtype.String("bogus"),
				},
				// A name is not a code.
				"127.0.5.0/24": mmdbtype.Map{"country": mmdbtype.String("Korea")},
			},
			wantSchema: schemaIPinfo,
			lookups: []addrWant{
				{"127.0.1.1", want{"JP", 2497, true}},
				{"127.0.2.1", want{"", 64512, false}},
				{"127.0.3.1", want{"US", 15169, true}},
				{"127.0.4.1", want{"DE", 0, true}},
				{"127.0.5.1", want{}},
			},
		},
		{
			// IPinfo's older free country_asn file has the code in "country".
			name:   "ipinfo-country-asn",
			dbType: "ipinfo generic_country_free_country_asn.mmdb",
			records: map[string]mmdbtype.DataType{
				"127.0.1.0/24": mmdbtype.Map{
					"country": mmdbtype.String("JP"), "country_name": mmdbtype.String("Japan"),
					"asn": mmdbtype.String("AS2497"),
				},
			},
			wantSchema: schemaIPinfo,
			lookups:    []addrWant{{"127.0.1.1", want{"JP", 2497, true}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := buildRecords(t, mmdbwriter.Options{DatabaseType: tt.dbType}, tt.records)
			db, err := OpenBytes(tt.name, data)
			if err != nil {
				t.Fatal(err)
			}
			if got := db.Info().Schema; got != tt.wantSchema {
				t.Errorf("Schema = %q, want %q", got, tt.wantSchema)
			}
			for _, l := range tt.lookups {
				t.Run(l.addr, func(t *testing.T) {
					checkLookup(t, db, l.addr, l.want)
					checkLookup(t, db, l.addr, l.want)
				})
			}
		})
	}
}

func TestIPv4OnlyDatabase(t *testing.T) {
	data := buildRecords(t, mmdbwriter.Options{DatabaseType: "GeoLite2-Country", IPVersion: 4},
		map[string]mmdbtype.DataType{"127.0.1.0/24": mmdbtype.Map{"country": iso(mmdbtype.String("JP"))}})
	db, err := OpenBytes("v4", data)
	if err != nil {
		t.Fatal(err)
	}
	if got := db.Info().IPVersion; got != 4 {
		t.Errorf("IPVersion = %d, want 4", got)
	}
	checkLookup(t, db, "127.0.1.1", want{"JP", 0, true})
	checkLookup(t, db, "::ffff:127.0.1.1", want{"JP", 0, true})
	checkLookup(t, db, "::1", want{})
	checkLookup(t, db, "2001:db8::1", want{})
	if allocs := testing.AllocsPerRun(100, func() { db.Lookup(netip.MustParseAddr("2001:db8::1")) }); allocs != 0 {
		t.Errorf("IPv6 lookup in an IPv4 database allocates %v times", allocs)
	}
}

func TestNilAndInvalid(t *testing.T) {
	var db *Database
	if loc, ok := db.Lookup(netip.MustParseAddr("127.0.0.1")); ok || loc.Country != CountryUnknown {
		t.Errorf("nil Database Lookup = %+v, %v", loc, ok)
	}
	if got := db.Info(); got != (Info{}) {
		t.Errorf("nil Database Info = %+v", got)
	}
	fixture, err := OpenBytes("fixture", mustBuild(t, geotest.CountryCode, geotest.Default))
	if err != nil {
		t.Fatal(err)
	}
	if loc, ok := fixture.Lookup(netip.Addr{}); ok || loc.Country != CountryUnknown {
		t.Errorf("Lookup(zero Addr) = %+v, %v", loc, ok)
	}
	s := NewStore(nil, DefaultInternal(), nil)
	if got := s.Lookup(netip.MustParseAddr("127.0.0.1")).Country; got != CountryInternal {
		t.Errorf("empty Store: 127.0.0.1 is %q", got)
	}
	if got := s.Lookup(netip.MustParseAddr("8.8.8.8")).Country; got != CountryUnknown {
		t.Errorf("empty Store: 8.8.8.8 is %q", got)
	}
	if got := s.Lookup(netip.Addr{}).Country; got != CountryUnknown {
		t.Errorf("empty Store: zero Addr is %q", got)
	}
}

func mustBuild(t testing.TB, schema geotest.Schema, entries map[string]string) []byte {
	t.Helper()
	data, err := geotest.Build(schema, entries)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// corruptTree makes the first node of the search tree point past the data
// section, which only a full verification notices.
func corruptTree(t *testing.T, data []byte) []byte {
	t.Helper()
	out := bytes.Clone(data)
	for i := range 3 { // left record of node 0 (24-bit records)
		out[i] = 0xFF
	}
	return out
}

// corruptData breaks a record in the data section: a map's size byte.
func corruptData(t *testing.T, data []byte) []byte {
	t.Helper()
	out := bytes.Clone(data)
	i := bytes.Index(out, []byte("country_code"))
	if i < 1 {
		t.Fatal("no country_code key in fixture")
	}
	out[i-1] = 0xE0 // key's control byte becomes "map of 0": the record's map is cut short
	return out
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	good := mustBuild(t, geotest.CountryCode, geotest.Default)
	weather := buildRecords(t, mmdbwriter.Options{DatabaseType: "Acme-Weather"},
		map[string]mmdbtype.DataType{"127.0.1.0/24": mmdbtype.Map{"temperature": mmdbtype.Int32(20)}})
	noRecords := buildRecords(t, mmdbwriter.Options{DatabaseType: "Acme-Empty"}, nil)

	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		path string
		want string
		is   error // errors.Is target, if any
	}{
		{
			name: "missing",
			path: filepath.Join(dir, "missing.mmdb"),
			want: "geo: database DIR/missing.mmdb does not exist",
			is:   fs.ErrNotExist,
		},
		{
			name: "directory",
			path: dir,
			want: "geo: database DIR is a directory, not an .mmdb file",
		},
		{
			name: "empty",
			path: write("empty.mmdb", nil),
			want: "geo: database DIR/empty.mmdb is empty (0 bytes), not a MaxMind DB (.mmdb) file; download or copy it again",
		},
		{
			name: "not an mmdb",
			path: write("text.mmdb", []byte("<html>404 Not Found</html>\n")),
			want: "geo: database DIR/text.mmdb is not a MaxMind DB (.mmdb) file, or it is truncated: no metadata section found",
		},
		{
			name: "truncated",
			path: write("truncated.mmdb", good[:len(good)/2]),
			want: "geo: database DIR/truncated.mmdb is not a MaxMind DB (.mmdb) file, or it is truncated: no metadata section found",
		},
		{
			name: "truncated metadata",
			path: write("short.mmdb", good[:len(good)-20]),
			want: "geo: database DIR/short.mmdb is corrupt (at offset 0: unexpected end of database); download or copy it again",
		},
		{
			name: "corrupt tree",
			path: write("tree.mmdb", corruptTree(t, good)),
			want: "geo: database DIR/tree.mmdb is corrupt (the MaxMind DB file's search tree is corrupt); download or copy it again",
		},
		{
			name: "corrupt data",
			path: write("data.mmdb", corruptData(t, good)),
			want: "geo: database DIR/data.mmdb is corrupt (received decoding error (unexpected map key type: Map) at offset of 0); download or copy it again",
		},
		{
			name: "asn only",
			path: geotest.WriteFile(t, dir, geotest.ASNOnly, geotest.Default),
			want: "geo: database DIR/GeoLite2-ASN.mmdb is an ASN-only database (GeoLite2-ASN); " +
				"sekisho needs a country database such as GeoLite2-Country",
		},
		{
			name: "unknown schema",
			path: write("weather.mmdb", weather),
			want: `geo: database DIR/weather.mmdb has an unsupported schema (database_type "Acme-Weather"): ` +
				"no record has a country field; sekisho reads GeoIP2/GeoLite2 Country or City, DB-IP, " +
				"IPinfo Lite and ip-location-db country databases",
		},
		{
			name: "no records",
			path: write("norecords.mmdb", noRecords),
			want: `geo: database DIR/norecords.mmdb has an unsupported schema (database_type "Acme-Empty"): ` +
				"no record has a country field; sekisho reads GeoIP2/GeoLite2 Country or City, DB-IP, " +
				"IPinfo Lite and ip-location-db country databases",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			db, err := Open(tt.path)
			if err == nil {
				t.Fatalf("Open succeeded: %+v", db.Info())
			}
			want := strings.ReplaceAll(tt.want, "DIR", dir)
			if got := err.Error(); got != want {
				t.Errorf("error:\n got %s\nwant %s", got, want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(err, %v) = false", tt.is)
			}
		})
	}
}

func TestOpenBytesErrors(t *testing.T) {
	good := mustBuild(t, geotest.CountryCode, geotest.Default)
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "geo: database src is empty (0 bytes), not a MaxMind DB (.mmdb) file; download or copy it again"},
		{"not an mmdb", []byte("PK\x03\x04 a zip file"),
			"geo: database src is not a MaxMind DB (.mmdb) file, or it is truncated: no metadata section found"},
		{"corrupt tree", corruptTree(t, good), "geo: database src is corrupt (the MaxMind DB file's search tree is corrupt); download or copy it again"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := OpenBytes("src", tt.data)
			if err == nil {
				t.Fatal("OpenBytes succeeded")
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error:\n got %s\nwant %s", got, tt.want)
			}
		})
	}
}

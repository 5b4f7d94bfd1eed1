package geotest

import (
	"bytes"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/oschwald/maxminddb-golang/v2"
)

var allSchemas = []Schema{CountryCode, GeoIP2Country, GeoIP2City, DBIP, IPinfoLite, ASNOnly}

func open(t *testing.T, schema Schema, entries map[string]string) *maxminddb.Reader {
	t.Helper()
	data, err := Build(schema, entries)
	if err != nil {
		t.Fatal(err)
	}
	r, err := maxminddb.OpenBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestBuildIsDeterministic(t *testing.T) {
	for _, s := range allSchemas {
		t.Run(s.String(), func(t *testing.T) {
			first, err := Build(s, Default)
			if err != nil {
				t.Fatal(err)
			}
			for range 5 {
				again, err := Build(s, maps.Clone(Default))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(first, again) {
					t.Fatal("same input, different bytes")
				}
			}
		})
	}
}

func TestMetadata(t *testing.T) {
	tests := []struct {
		schema       Schema
		databaseType string
		recordSize   uint
		description  bool
	}{
		{CountryCode, "country ipvAll", 24, false},
		{GeoIP2Country, "GeoLite2-Country", 24, true},
		{GeoIP2City, "GeoLite2-City", 28, true},
		{DBIP, "DBIP-Country-Lite", 24, true},
		{IPinfoLite, "ipinfo bundle_location_lite.mmdb", 32, true},
		{ASNOnly, "GeoLite2-ASN", 24, true},
	}
	for _, tt := range tests {
		t.Run(tt.schema.String(), func(t *testing.T) {
			md := open(t, tt.schema, Default).Metadata
			if md.DatabaseType != tt.databaseType || md.RecordSize != tt.recordSize ||
				md.IPVersion != 6 || int64(md.BuildEpoch) != BuildEpoch ||
				(len(md.Description) > 0) != tt.description {
				t.Errorf("metadata = %+v", md)
			}
		})
	}
}

func TestRecords(t *testing.T) {
	type rec = map[string]any
	tests := []struct {
		schema Schema
		check  func(t *testing.T, r rec, country string, asn uint64)
	}{
		{CountryCode, func(t *testing.T, r rec, c string, _ uint64) {
			if r["country_code"] != c || len(r) != 1 {
				t.Errorf("record %v", r)
			}
		}},
		{GeoIP2Country, func(t *testing.T, r rec, c string, _ uint64) {
			if r["country"].(rec)["iso_code"] != c || r["registered_country"].(rec)["iso_code"] != c ||
				r["continent"].(rec)["code"] == nil {
				t.Errorf("record %v", r)
			}
		}},
		{GeoIP2City, func(t *testing.T, r rec, c string, _ uint64) {
			if r["country"].(rec)["iso_code"] != c || r["city"] == nil || r["location"] == nil ||
				r["subdivisions"] == nil {
				t.Errorf("record %v", r)
			}
		}},
		{DBIP, func(t *testing.T, r rec, c string, _ uint64) {
			if r["country"].(rec)["iso_code"] != c || r["country"].(rec)["is_in_european_union"] != false {
				t.Errorf("record %v", r)
			}
		}},
		{IPinfoLite, func(t *testing.T, r rec, c string, asn uint64) {
			if r["country_code"] != c || r["asn"] != "AS"+strconv.FormatUint(asn, 10) || r["country"] == c {
				t.Errorf("record %v", r)
			}
		}},
		{ASNOnly, func(t *testing.T, r rec, _ string, asn uint64) {
			if r["autonomous_system_number"] != asn || r["country"] != nil {
				t.Errorf("record %v", r)
			}
		}},
	}
	// Default in insertion order, with the ASNs Build documents.
	lookups := []struct {
		addr, country string
		asn           uint64
	}{
		{"127.0.1.1", "JP", 64500},
		{"127.0.2.254", "KR", 64501},
		{"127.0.3.0", "CN", 64502},
		{"127.0.4.255", "US", 64503},
		{"::1", "JP", 64504},
	}
	for _, tt := range tests {
		t.Run(tt.schema.String(), func(t *testing.T) {
			r := open(t, tt.schema, Default)
			for _, l := range lookups {
				var got rec
				res := r.Lookup(netip.MustParseAddr(l.addr))
				if err := res.Decode(&got); err != nil || !res.Found() {
					t.Fatalf("%s: found %v, %v", l.addr, res.Found(), err)
				}
				tt.check(t, got, l.country, l.asn)
			}
			for _, absent := range []string{"127.0.5.1", "127.0.0.1", "10.0.0.1", "2001:db8::1"} {
				if r.Lookup(netip.MustParseAddr(absent)).Found() {
					t.Errorf("%s is in the fixture", absent)
				}
			}
		})
	}
}

func TestMoreSpecificWins(t *testing.T) {
	r := open(t, GeoIP2Country, map[string]string{
		"127.0.0.0/16": "US",
		"127.0.1.0/24": "JP",
		"127.0.1.8/29": "KR",
	})
	for addr, want := range map[string]string{"127.0.9.9": "US", "127.0.1.1": "JP", "127.0.1.9": "KR"} {
		var got struct {
			Country struct {
				ISOCode string `maxminddb:"iso_code"`
			} `maxminddb:"country"`
		}
		if err := r.Lookup(netip.MustParseAddr(addr)).Decode(&got); err != nil {
			t.Fatal(err)
		}
		if got.Country.ISOCode != want {
			t.Errorf("%s = %q, want %q", addr, got.Country.ISOCode, want)
		}
	}
}

func TestBuildErrors(t *testing.T) {
	tests := []struct {
		name    string
		schema  Schema
		entries map[string]string
		want    string
	}{
		{"bad cidr", CountryCode, map[string]string{"127.0.1.0": "JP"},
			`geotest: entry "127.0.1.0": netip.ParsePrefix("127.0.1.0"): no '/'`},
		{"duplicate", CountryCode, map[string]string{"127.0.1.0/24": "JP", "127.0.1.9/24": "KR"},
			"duplicate network 127.0.1.0/24"},
		{"unknown schema", Schema(42), Default, "geotest: unknown schema 42"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Build(tt.schema, tt.entries)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Build error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
	if got := Schema(42).String(); got != "Schema(42)" {
		t.Errorf("String() = %q", got)
	}
}

func TestWriteFileRenames(t *testing.T) {
	dir := t.TempDir()
	path := WriteFile(t, dir, GeoIP2City, Default)
	if filepath.Base(path) != "GeoLite2-City.mmdb" {
		t.Errorf("path = %s", path)
	}
	before, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	changed := maps.Clone(Default)
	changed["127.0.5.0/24"] = "DE"
	if again := WriteFile(t, dir, GeoIP2City, changed); again != path {
		t.Errorf("second path = %s", again)
	}
	after, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(before, after) {
		t.Error("WriteFile rewrote the file in place; it must rename a new file over it")
	}
	left, err := filepath.Glob(filepath.Join(dir, ".geotest-*"))
	if err != nil || len(left) != 0 {
		t.Errorf("temporary files left: %v %v", left, err)
	}
}

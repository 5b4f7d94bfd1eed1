package geo

import (
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/oschwald/maxminddb-golang/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sekisho/sekisho/geo/geotest"
)

type lookupCase struct {
	name string
	addr string
	want string // Store.Lookup country
}

// Cases for the embedded database (ip-location-db, 24-bit records, 1.3M
// nodes) and a GeoLite2-City fixture (28-bit records, nested records).
var (
	embeddedCases = []lookupCase{
		{"v4-found", "8.8.8.8", "US"},
		{"v6-found", "2001:4860:4860::8888", "US"},
		{"4in6-found", "::ffff:133.0.0.1", "JP"},
		{"v4-internal", "10.1.2.3", CountryInternal},
		{"v4-unknown", "192.0.2.1", CountryUnknown},
		{"v6-internal", "fe80::1", CountryInternal},
		{"v6-unknown", "3fff::1", CountryUnknown},
	}
	fixtureCases = []lookupCase{
		{"v4-found", "127.0.1.1", "JP"},
		{"v6-found", "::1", "JP"},
		{"v4-internal", "127.0.5.1", CountryInternal},
		{"v4-unknown", "192.0.2.1", CountryUnknown},
		{"v6-unknown", "2001:db8::1", CountryUnknown},
	}
)

func benchStores(tb testing.TB) map[string]struct {
	store *Store
	cases []lookupCase
} {
	tb.Helper()
	emb, err := Embedded()
	if err != nil {
		tb.Fatal(err)
	}
	fix, err := OpenBytes("fixture", mustBuild(tb, geotest.GeoIP2City, geotest.Default))
	if err != nil {
		tb.Fatal(err)
	}
	return map[string]struct {
		store *Store
		cases []lookupCase
	}{
		"embedded": {NewStore(emb, DefaultInternal(), prometheus.NewRegistry()), embeddedCases},
		"fixture":  {NewStore(fix, DefaultInternal(), prometheus.NewRegistry()), fixtureCases},
	}
}

// TestLookupDoesNotAllocate is the hot-path contract: once warm, a lookup
// makes no allocation, whatever the answer.
func TestLookupDoesNotAllocate(t *testing.T) {
	for name, bs := range benchStores(t) {
		for _, c := range bs.cases {
			t.Run(name+"/"+c.name, func(t *testing.T) {
				addr := netip.MustParseAddr(c.addr)
				if got := bs.store.Lookup(addr).Country; got != c.want {
					t.Fatalf("Lookup(%s) = %s, want %s", addr, got, c.want)
				}
				if n := testing.AllocsPerRun(1000, func() { bs.store.Lookup(addr) }); n != 0 {
					t.Errorf("Store.Lookup(%s): %v allocs per call, want 0", addr, n)
				}
				db := bs.store.Database()
				if n := testing.AllocsPerRun(1000, func() { db.Lookup(addr) }); n != 0 {
					t.Errorf("Database.Lookup(%s): %v allocs per call, want 0", addr, n)
				}
			})
		}
	}
}

func clearCaches(db *Database) {
	for i := range db.records {
		db.records[i].Store(0)
	}
	for i := range db.addrs {
		db.addrs[i].seq.Store(0)
		db.addrs[i].answer.Store(0)
	}
}

// TestLookupMissDoesNotAllocate checks the walk and decode path too: with
// the caches emptied before every call, a warm decoder pool and maxminddb's
// string cache keep a miss allocation-free.
func TestLookupMissDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	for name, bs := range benchStores(t) {
		db := bs.store.Database()
		addr := netip.MustParseAddr(bs.cases[0].addr)
		t.Run(name, func(t *testing.T) {
			n := testing.AllocsPerRun(1000, func() {
				clearCaches(db)
				db.Lookup(addr)
			})
			if n != 0 {
				t.Errorf("uncached Lookup(%s): %v allocs per call, want 0", addr, n)
			}
		})
	}
}

// BenchmarkLookup measures Store.Lookup (what the dialer calls) and
// Database.Lookup on the embedded database and on a GeoLite2-City fixture.
func BenchmarkLookup(b *testing.B) {
	for _, name := range []string{"embedded", "fixture"} {
		bs := benchStores(b)[name]
		for _, c := range bs.cases {
			addr := netip.MustParseAddr(c.addr)
			if got := bs.store.Lookup(addr).Country; got != c.want {
				b.Fatalf("Lookup(%s) = %s, want %s", addr, got, c.want)
			}
			b.Run(name+"/Store/"+c.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					bs.store.Lookup(addr)
				}
			})
			db := bs.store.Database()
			b.Run(name+"/Database/"+c.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					db.Lookup(addr)
				}
			})
			// The cost without the address cache: the tree walk
			// (plus the record cache), as for an address seen first.
			b.Run(name+"/walk/"+c.name, func(b *testing.B) {
				b.ReportAllocs()
				a := normalize(addr)
				for b.Loop() {
					db.walk(a)
				}
			})
		}
	}

	// Many different public addresses: the search tree no longer sits in
	// the CPU cache, as with real traffic.
	bs := benchStores(b)["embedded"]
	rng := rand.New(rand.NewPCG(1, 2))
	addrs := make([]netip.Addr, 1<<16)
	for i := range addrs {
		if i%4 == 3 {
			var a [16]byte
			a[0], a[1] = 0x24, byte(rng.IntN(256)) // 2400::/8, APNIC
			for j := 2; j < 16; j++ {
				a[j] = byte(rng.IntN(256))
			}
			addrs[i] = netip.AddrFrom16(a)
			continue
		}
		addrs[i] = netip.AddrFrom4([4]byte{byte(1 + rng.IntN(222)), byte(rng.IntN(256)), byte(rng.IntN(256)), 1})
	}
	b.Run("embedded/Store/mixed-64k", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			bs.store.Lookup(addrs[i&(len(addrs)-1)])
			i++
		}
	})
	b.Run("embedded/Store/v4-found-parallel", func(b *testing.B) {
		b.ReportAllocs()
		addr := netip.MustParseAddr("8.8.8.8")
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				bs.store.Lookup(addr)
			}
		})
	})
}

// BenchmarkOpenEmbedded is the cost of the first Embedded call: gunzip,
// maxminddb.OpenBytes, Verify and schema probing.
func BenchmarkOpenEmbedded(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := openEmbedded(); err != nil {
			b.Fatal(err)
		}
	}
}

// freshEmbeddedReader opens the embedded bytes without verifying them.
func freshEmbeddedReader(tb testing.TB) *maxminddb.Reader {
	tb.Helper()
	data, err := embeddedBytes()
	if err != nil {
		tb.Fatal(err)
	}
	r, err := maxminddb.OpenBytes(data)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// BenchmarkVerifyEmbedded is maxminddb's Reader.Verify on the embedded
// database alone.
func BenchmarkVerifyEmbedded(b *testing.B) {
	r := freshEmbeddedReader(b)
	for b.Loop() {
		if err := verify(r); err != nil {
			b.Fatal(err)
		}
	}
}

func TestVerifyEmbeddedTime(t *testing.T) {
	r := freshEmbeddedReader(t)
	start := time.Now()
	if err := verify(r); err != nil {
		t.Fatal(err)
	}
	t.Logf("Verify on the embedded database: %v", time.Since(start))
	// Verify still rejects the empty description by itself: the reason
	// verify() exists.
	if err := r.Verify(); err == nil || !strings.Contains(err.Error(), "description") {
		t.Errorf("Reader.Verify on the embedded database = %v; expected the empty-description complaint", err)
	}
}

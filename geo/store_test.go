package geo

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/sekisho/sekisho/geo/geotest"
)

// series gathers reg into "name{label="value",...}" → value, the shape
// prometheus/testutil compares. (testutil itself needs a module that go.mod
// does not have, github.com/kylelemons/godebug.)
func series(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]float64)
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := make([]string, 0, len(m.GetLabel()))
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := mf.GetName()
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.GetCounter() != nil:
				out[key] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key] = m.GetGauge().GetValue()
			default:
				t.Fatalf("unexpected metric type for %s", key)
			}
		}
	}
	return out
}

// expectSeries checks the listed series, and that no other series of the
// listed metric names exist (so a stale _info series fails).
func expectSeries(t *testing.T, reg *prometheus.Registry, want map[string]float64) {
	t.Helper()
	got := series(t, reg)
	names := make(map[string]bool)
	for k := range want {
		names[strings.SplitN(k, "{", 2)[0]] = true
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("%s = %v (present %v), want %v", k, g, ok, v)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok && names[strings.SplitN(k, "{", 2)[0]] {
			t.Errorf("unexpected series %s = %v", k, got[k])
		}
	}
}

func fixedClock(s *Store, unix int64) { s.now = func() time.Time { return time.Unix(unix, 0) } }

func TestStoreLookupOrder(t *testing.T) {
	// The database answer wins over the internal networks: 127.0.1.0/24 is
	// loopback yet placed in JP by the fixture.
	db, err := OpenBytes("fixture", mustBuild(t, geotest.GeoIP2Country, geotest.Default))
	if err != nil {
		t.Fatal(err)
	}
	internal := append(DefaultInternal(),
		netip.MustParsePrefix("::ffff:192.0.2.0/120"), // 4in6 prefix: unmapped to 192.0.2.0/24
		netip.MustParsePrefix("198.51.100.7/24"),      // not masked: masked to 198.51.100.0/24
		netip.Prefix{},                                // invalid: ignored
		netip.MustParsePrefix("::ffff:0:0/95"),        // wider than the mapped range: ignored
	)
	s := NewStore(db, internal, nil)
	tests := []struct {
		addr string
		want Location
	}{
		{"127.0.1.1", Location{Country: "JP"}},
		{"::ffff:127.0.2.9", Location{Country: "KR"}},
		{"::1", Location{Country: "JP"}},
		{"127.0.5.1", Location{Country: CountryInternal}},
		{"127.0.0.1", Location{Country: CountryInternal}},
		{"10.9.8.7", Location{Country: CountryInternal}},
		{"172.31.255.255", Location{Country: CountryInternal}},
		{"172.32.0.1", Location{Country: CountryUnknown}},
		{"192.168.10.1", Location{Country: CountryInternal}},
		{"100.127.255.255", Location{Country: CountryInternal}},
		{"100.128.0.1", Location{Country: CountryUnknown}},
		{"169.254.169.254", Location{Country: CountryInternal}},
		{"fc00::1", Location{Country: CountryInternal}},
		{"fd12:3456::1", Location{Country: CountryInternal}},
		{"fe80::1%eth0", Location{Country: CountryInternal}},
		{"::ffff:10.0.0.1", Location{Country: CountryInternal}},
		{"192.0.2.33", Location{Country: CountryInternal}},
		{"198.51.100.200", Location{Country: CountryInternal}},
		{"8.8.8.8", Location{Country: CountryUnknown}},
		{"2001:db8::1", Location{Country: CountryUnknown}},
		// 0.0.0.1 is the node that ::1 is stored in.
		{"::ffff:0:1", Location{Country: "JP"}},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if got := s.Lookup(netip.MustParseAddr(tt.addr)); got != tt.want {
				t.Errorf("Lookup(%s) = %+v, want %+v", tt.addr, got, tt.want)
			}
		})
	}
}

func TestStoreKeepsASNOfUnplacedAddress(t *testing.T) {
	data, err := geotest.Build(geotest.IPinfoLite, map[string]string{"127.0.1.0/24": "", "198.51.100.0/24": ""})
	if err != nil {
		t.Fatal(err)
	}
	db, err := OpenBytes("fixture", data)
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(db, DefaultInternal(), nil)
	if got, want := s.Lookup(netip.MustParseAddr("127.0.1.1")), (Location{CountryInternal, 64500}); got != want {
		t.Errorf("Lookup = %+v, want %+v", got, want)
	}
	if got, want := s.Lookup(netip.MustParseAddr("198.51.100.1")), (Location{CountryUnknown, 64501}); got != want {
		t.Errorf("Lookup = %+v, want %+v", got, want)
	}
}

// TestIsInternalMatchesContains checks the masked-word prefix test against
// netip.Prefix.Contains, on random addresses around every prefix boundary.
func TestIsInternalMatchesContains(t *testing.T) {
	prefixes := append(DefaultInternal(),
		netip.MustParsePrefix("0.0.0.0/0"),
		netip.MustParsePrefix("203.0.113.7/32"),
		netip.MustParsePrefix("2001:db8::/64"),
		netip.MustParsePrefix("2001:db8:1:2:3:4:5:6/127"),
		netip.MustParsePrefix("2001:db8::1/128"),
		netip.MustParsePrefix("2001:db8:8000::/33"),
	)
	rng := rand.New(rand.NewPCG(7, 8))
	for _, p := range prefixes {
		s := NewStore(nil, []netip.Prefix{p}, nil)
		base := p.Masked().Addr()
		for range 2000 {
			b := base.AsSlice()
			// Flip one random bit, sometimes inside the prefix.
			bit := rng.IntN(len(b) * 8)
			b[bit/8] ^= 0x80 >> (bit % 8)
			a, _ := netip.AddrFromSlice(b)
			hi, lo := words(a)
			if got, want := s.isInternal(a.Is4(), hi, lo), p.Contains(a); got != want {
				t.Fatalf("prefix %s, addr %s: isInternal = %v, Contains = %v", p, a, got, want)
			}
		}
	}
}

func TestDefaultInternalIsFresh(t *testing.T) {
	a := DefaultInternal()
	a[0] = netip.MustParsePrefix("1.0.0.0/8")
	if b := DefaultInternal(); b[0] != netip.MustParsePrefix("127.0.0.0/8") || len(b) != 9 {
		t.Errorf("DefaultInternal shares its slice: %v", b)
	}
}

func TestStoreMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	path := geotest.WriteFile(t, t.TempDir(), geotest.GeoIP2Country, geotest.Default)
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(db, DefaultInternal(), reg)
	for _, a := range []string{"127.0.1.1", "127.0.2.1", "::1", "127.0.5.1", "8.8.8.8"} {
		s.Lookup(netip.MustParseAddr(a))
	}
	infoKey := fmt.Sprintf(`sekisho_geo_database_info{schema="geoip2",source=%q,type="GeoLite2-Country"}`, path)
	expectSeries(t, reg, map[string]float64{
		"sekisho_geo_database_build_timestamp_seconds": float64(geotest.BuildEpoch),
		infoKey: 1,
		`sekisho_geo_lookups_total{result="found"}`:    3,
		`sekisho_geo_lookups_total{result="internal"}`: 1,
		`sekisho_geo_lookups_total{result="unknown"}`:  1,
		`sekisho_geo_reloads_total{result="success"}`:  0,
		`sekisho_geo_reloads_total{result="failure"}`:  0,
		"sekisho_geo_last_reload_successful":           1,
	})
	if v := series(t, reg)["sekisho_geo_last_reload_success_timestamp_seconds"]; v < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("initial load timestamp = %v, want about now", v)
	}

	// Swapping to the embedded database replaces the info series.
	emb, err := Embedded()
	if err != nil {
		t.Fatal(err)
	}
	s.Swap(emb)
	expectSeries(t, reg, map[string]float64{
		"sekisho_geo_database_build_timestamp_seconds": float64(time.Date(2026, 6, 17, 19, 51, 40, 0, time.UTC).Unix()),
		`sekisho_geo_database_info{schema="ip-location-db",source="embedded geo-whois-asn-country 2026-06-17",type="country ipvAll"}`: 1,
	})
	s.Swap(nil)
	expectSeries(t, reg, map[string]float64{"sekisho_geo_database_build_timestamp_seconds": 0})
	if n := strings.Count(strings.Join(slices.Collect(maps.Keys(series(t, reg))), "\n"), "database_info"); n != 0 {
		t.Errorf("%d database_info series left after Swap(nil)", n)
	}

	// Every metric has help, and names pass promlint.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "sekisho_geo_") || mf.GetHelp() == "" {
			t.Errorf("metric %s: bad name or no help", mf.GetName())
		}
	}
}

func TestNewStoreRegistersOnlyOnGivenRegistry(t *testing.T) {
	before, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	NewStore(nil, nil, nil)
	NewStore(nil, nil, prometheus.NewRegistry())
	after, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Errorf("default registry went from %d to %d metric families", len(before), len(after))
	}
}

// replace writes data beside path and renames it over path, as geoipupdate
// does.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestReloadFile(t *testing.T) {
	dir := t.TempDir()
	path := geotest.WriteFile(t, dir, geotest.GeoIP2Country, geotest.Default)
	db, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	s := NewStore(db, DefaultInternal(), reg)
	fixedClock(s, 1_800_000_000)
	country := func(a string) string { return s.Lookup(netip.MustParseAddr(a)).Country }
	reloads := func(ok, failed float64, last float64, lastTime float64) map[string]float64 {
		return map[string]float64{
			`sekisho_geo_reloads_total{result="success"}`:       ok,
			`sekisho_geo_reloads_total{result="failure"}`:       failed,
			"sekisho_geo_last_reload_successful":                last,
			"sekisho_geo_last_reload_success_timestamp_seconds": lastTime,
		}
	}

	if got := country("127.0.2.1"); got != "KR" {
		t.Fatalf("before reload: %s", got)
	}

	t.Run("same content", func(t *testing.T) {
		changed, err := s.ReloadFile(path)
		if err != nil || changed {
			t.Fatalf("ReloadFile = %v, %v; want false, nil", changed, err)
		}
		if s.Database() != db {
			t.Error("an unchanged file replaced the database")
		}
	})

	old := s.Database()
	moved := maps.Clone(geotest.Default)
	moved["127.0.2.0/24"] = "JP"
	moved["127.0.5.0/24"] = "DE"
	t.Run("replaced by rename", func(t *testing.T) {
		geotest.WriteFile(t, dir, geotest.GeoIP2Country, moved) // temp file + rename
		fixedClock(s, 1_800_000_100)
		changed, err := s.ReloadFile(path)
		if err != nil || !changed {
			t.Fatalf("ReloadFile = %v, %v; want true, nil", changed, err)
		}
		if got := country("127.0.2.1"); got != "JP" {
			t.Errorf("127.0.2.1 after reload = %s, want JP", got)
		}
		if got := country("127.0.5.1"); got != "DE" {
			t.Errorf("127.0.5.1 after reload = %s, want DE", got)
		}
		// The old database was not closed: a request that loaded it
		// before the swap still gets answers.
		if loc, ok := old.Lookup(netip.MustParseAddr("127.0.2.1")); !ok || loc.Country != "KR" {
			t.Errorf("old database after swap: %+v, %v", loc, ok)
		}
		expectSeries(t, reg, reloads(1, 0, 1, 1_800_000_100))
	})

	t.Run("same content again", func(t *testing.T) {
		cur := s.Database()
		changed, err := s.ReloadFile(path)
		if err != nil || changed {
			t.Fatalf("ReloadFile = %v, %v; want false, nil", changed, err)
		}
		if s.Database() != cur {
			t.Error("database replaced")
		}
		expectSeries(t, reg, reloads(1, 0, 1, 1_800_000_100))
	})

	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	failures := []struct {
		name string
		data []byte // nil: remove the file
		want string
	}{
		{
			name: "corrupt replacement",
			data: good[:len(good)/3],
			want: "geo: database PATH is not a MaxMind DB (.mmdb) file, or it is truncated: no metadata section found",
		},
		{
			name: "corrupt tree",
			data: corruptTree(t, good),
			want: "geo: database PATH is corrupt (the MaxMind DB file's search tree is corrupt); download or copy it again",
		},
		{
			name: "asn-only replacement",
			data: mustBuild(t, geotest.ASNOnly, geotest.Default),
			want: "geo: database PATH is an ASN-only database (GeoLite2-ASN); sekisho needs a country database such as GeoLite2-Country",
		},
		{
			name: "empty replacement",
			data: []byte{},
			want: "geo: database PATH is empty (0 bytes), not a MaxMind DB (.mmdb) file; download or copy it again",
		},
		{
			name: "removed",
			want: "geo: database PATH does not exist",
		},
	}
	for i, f := range failures {
		t.Run(f.name, func(t *testing.T) {
			cur := s.Database()
			if f.data == nil {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
			} else {
				replace(t, path, f.data)
			}
			fixedClock(s, 1_800_000_200)
			changed, err := s.ReloadFile(path)
			if err == nil || changed {
				t.Fatalf("ReloadFile = %v, %v; want false and an error", changed, err)
			}
			if got, want := err.Error(), strings.ReplaceAll(f.want, "PATH", path); got != want {
				t.Errorf("error:\n got %s\nwant %s", got, want)
			}
			if s.Database() != cur {
				t.Error("a failed reload replaced the database")
			}
			if got := country("127.0.2.1"); got != "JP" {
				t.Errorf("old data no longer answers: 127.0.2.1 = %s", got)
			}
			expectSeries(t, reg, reloads(1, float64(i+1), 0, 1_800_000_100))
		})
	}

	t.Run("good file back", func(t *testing.T) {
		// The content in use comes back: nothing to load, but the failure
		// is over.
		replace(t, path, good)
		changed, err := s.ReloadFile(path)
		if err != nil || changed {
			t.Fatalf("ReloadFile = %v, %v; want false, nil", changed, err)
		}
		expectSeries(t, reg, reloads(1, float64(len(failures)), 1, 1_800_000_100))
	})

	t.Run("other path with same content", func(t *testing.T) {
		// Same bytes under another name: the source changes, so it loads.
		other := filepath.Join(dir, "copy.mmdb")
		replace(t, other, good)
		changed, err := s.ReloadFile(other)
		if err != nil || !changed {
			t.Fatalf("ReloadFile = %v, %v; want true, nil", changed, err)
		}
		if got := s.Database().Info().Source; got != other {
			t.Errorf("Source = %s, want %s", got, other)
		}
	})
}

// TestConcurrentLookupAndSwap runs lookups while the database is swapped and
// reloaded underneath; run with -race. Every answer must come from one of the
// databases, never a mix or a crash.
func TestConcurrentLookupAndSwap(t *testing.T) {
	dir := t.TempDir()
	a := maps.Clone(geotest.Default)
	b := maps.Clone(geotest.Default)
	b["127.0.1.0/24"] = "KR"
	dbA, err := OpenBytes("a", mustBuild(t, geotest.IPinfoLite, a))
	if err != nil {
		t.Fatal(err)
	}
	dbB, err := OpenBytes("b", mustBuild(t, geotest.GeoIP2City, b))
	if err != nil {
		t.Fatal(err)
	}
	path := geotest.WriteFile(t, dir, geotest.CountryCode, a)
	s := NewStore(dbA, DefaultInternal(), prometheus.NewRegistry())

	valid := map[string]map[Location]bool{
		// IPinfo a, City b, ip-location-db a from path, or none (internal).
		"127.0.1.1": {{"JP", 64500}: true, {"KR", 0}: true, {"JP", 0}: true, {CountryInternal, 0}: true},
		"127.0.2.1": {{"KR", 64501}: true, {"KR", 0}: true, {CountryInternal, 0}: true},
		"127.0.5.1": {{CountryInternal, 0}: true},
		"8.8.8.8":   {{CountryUnknown, 0}: true},
		"::1":       {{"JP", 64504}: true, {"JP", 0}: true, {CountryInternal, 0}: true},
	}
	addrs := slices.Collect(maps.Keys(valid))
	var stop atomic.Bool
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := range 4 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				a := addrs[(i+g)%len(addrs)]
				loc := s.Lookup(netip.MustParseAddr(a))
				if !valid[a][loc] {
					select {
					case errs <- fmt.Sprintf("Lookup(%s) = %+v", a, loc):
					default:
					}
					return
				}
				if db := s.Database(); db != nil {
					db.Lookup(netip.MustParseAddr(a))
				}
			}
		})
	}
	for i := range 200 {
		switch i % 4 {
		case 0:
			s.Swap(dbB)
		case 1:
			s.Swap(dbA)
		case 2:
			if _, err := s.ReloadFile(path); err != nil {
				t.Error(err)
			}
		case 3:
			s.Swap(nil)
		}
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestTeredoIsUnknown: a Teredo address embeds its relay server's IPv4
// address, which MaxMind-style databases use to place it; the host behind it
// may be anywhere, so it must be unknown (and uploads to it blocked).
func TestTeredoIsUnknown(t *testing.T) {
	data, err := geotest.Build(geotest.GeoIP2Country, geotest.Default)
	if err != nil {
		t.Fatal(err)
	}
	db, err := OpenBytes("fixture", data)
	if err != nil {
		t.Fatal(err)
	}
	a := netip.MustParseAddr("2001:0:7f00:101:0:63bf:3400:8cf6") // server 127.0.1.1 (JP in the fixture)
	if loc, ok := db.Lookup(a); !ok || loc.Country != "JP" {
		t.Skipf("the fixture does not place the Teredo address by its server (%v %v)", loc, ok)
	}
	if got := NewStore(db, DefaultInternal(), nil).Lookup(a).Country; got != CountryUnknown {
		t.Errorf("Store.Lookup(teredo) = %q, want %q", got, CountryUnknown)
	}
}

package geo

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"testing"

	"github.com/sekisho/sekisho/geo/geotest"
)

// TestCachesUnderContention hammers both caches from several goroutines with
// far more addresses and records than they have slots, so entries are
// overwritten while others read them; every answer must still be the right
// one. Run with -race.
func TestCachesUnderContention(t *testing.T) {
	countries := []string{"JP", "KR", "CN", "US", "DE", "AU", "NL"}
	entries := make(map[string]string)
	type answer struct {
		country string
		asn     uint32
	}
	wantFor := make(map[byte]answer) // third octet → answer
	asn := uint32(geotest.FirstASN)
	for n := range 256 {
		if n%5 == 4 {
			continue // absent: not placed
		}
		c := countries[n%len(countries)]
		entries[fmt.Sprintf("127.0.%d.0/24", n)] = c
		wantFor[byte(n)] = answer{c, asn} // /24s in address order get consecutive ASNs
		asn++
	}
	db, err := OpenBytes("contention", mustBuild(t, geotest.IPinfoLite, entries))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 4 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 99))
			for range 200_000 {
				third, fourth := byte(rng.IntN(256)), byte(rng.IntN(256))
				addr := netip.AddrFrom4([4]byte{127, 0, third, fourth})
				if rng.IntN(2) == 0 {
					addr = netip.AddrFrom16(addr.As16()) // 4in6
				}
				loc, ok := db.Lookup(addr)
				w, placed := wantFor[third]
				if ok != placed || (placed && (loc.Country != w.country || loc.ASN != w.asn)) ||
					(!placed && loc != unplaced) {
					errs <- fmt.Errorf("Lookup(%s) = %+v, %v; want %+v, %v", addr, loc, ok, w, placed)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

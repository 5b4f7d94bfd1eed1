package geo_test

import (
	"fmt"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sekisho/sekisho/geo"
	"github.com/sekisho/sekisho/geo/geotest"
)

func ExampleStore_Lookup() {
	// A GeoLite2-Country-shaped fixture: 127.0.1.0/24 is "Japan",
	// 127.0.2.0/24 "Korea"; 127.0.5.0/24 is not in it.
	data, err := geotest.Build(geotest.GeoIP2Country, geotest.Default)
	if err != nil {
		panic(err)
	}
	db, err := geo.OpenBytes("example", data)
	if err != nil {
		panic(err)
	}
	store := geo.NewStore(db, geo.DefaultInternal(), prometheus.NewRegistry())
	for _, a := range []string{"127.0.1.10", "::ffff:127.0.2.10", "127.0.5.10", "192.0.2.10"} {
		fmt.Println(a, store.Lookup(netip.MustParseAddr(a)).Country)
	}
	fmt.Println(store.Database().Info().Schema)
	// Output:
	// 127.0.1.10 JP
	// ::ffff:127.0.2.10 KR
	// 127.0.5.10 internal
	// 192.0.2.10 unknown
	// geoip2
}

func ExampleEmbedded() {
	db, err := geo.Embedded()
	if err != nil {
		panic(err)
	}
	loc, placed := db.Lookup(netip.MustParseAddr("133.0.0.1"))
	fmt.Println(loc.Country, placed, db.Info().Source)
	// Output: JP true embedded geo-whois-asn-country 2026-06-17
}

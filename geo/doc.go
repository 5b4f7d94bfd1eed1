// Package geo answers one question for sekisho: in which country is the IP
// address that the proxy is about to dial?
//
// It reads MaxMind-format databases (.mmdb) through
// github.com/oschwald/maxminddb-golang/v2 and understands the common schemas:
// GeoIP2 and GeoLite2 Country and City, DB-IP (lite and commercial), IPinfo
// Lite, and the ip-location-db "country_code" databases. The schema is probed
// when a database is opened, and a lookup then decodes only the country (and
// the ASN when the database has one).
//
// # Usage
//
//	db, err := geo.Open("/var/lib/GeoIP/GeoLite2-Country.mmdb")
//	if err != nil {
//		db, err = geo.Embedded() // the default shipped in the binary
//	}
//	store := geo.NewStore(db, geo.DefaultInternal(), registry)
//	loc := store.Lookup(addr) // loc.Country is "JP", "US", ..., "internal" or "unknown"
//
//	// later, when the file changed on disk:
//	changed, err := store.ReloadFile(path) // a bad file keeps the old database
//
// [Store.Lookup] is on every request's hot path: it does not allocate once
// warm and takes tens of nanoseconds.
//
// # Lifetime of a database
//
// A [Database] is immutable and safe for concurrent use. [Store] publishes one
// through an atomic pointer; a swap never closes the old database, because a
// lookup that loaded the old pointer may still be running. The old database is
// released by the garbage collector once nothing refers to it. There is no
// Close in this package on purpose.
//
// [Open] reads the file into memory rather than memory-mapping it: a mapped
// file rewritten in place (for example with cp) would crash the proxy with
// SIGBUS, and nothing may crash the proxy. Whatever happens to the file, a
// Database keeps answering from its own bytes.
//
// # Non-goals
//
// geo knows nothing of HTTP, rules or the proxy, and never resolves names: it
// is handed an address and says where it is. It does not download databases,
// does not watch files (the reload loop in cmd/sekisho does), and does not
// log: errors are returned to the caller. It does not try to say where data
// is stored; the country of an anycast or CDN edge is where that edge is.
package geo

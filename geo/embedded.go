package geo

import (
	"bytes"
	"compress/gzip"
	_ "embed" // for the default database
	"encoding/binary"
	"fmt"
	"sync"
)

// embeddedGz is geo-whois-asn-country.mmdb from the npm package
// @ip-location-db/geo-whois-asn-country-mmdb 2.3.2026061719 (built
// 2026-06-17), compressed with gzip -9. Data: CC BY 4.0, Number Resource
// Organization (nro.net), via sapics/ip-location-db; see
// data/LICENSE-DATA.md.
//
//go:embed data/geo-whois-asn-country.mmdb.gz
var embeddedGz []byte

// embeddedSource is Info.Source of the embedded database.
const embeddedSource = "embedded geo-whois-asn-country 2026-06-17"

var embedded struct {
	once sync.Once
	db   *Database
	err  error
}

// Embedded returns the database compiled into the binary, so that sekisho
// places addresses with no download at all. It is a snapshot of RIR
// registration data (whois, geofeeds, ASN) from 2026-06-17: good enough to
// start, but registration country is not always where a network is used, and
// it ages. Production deployments should point sekisho at GeoLite2/GeoIP2,
// DB-IP or IPinfo Lite kept fresh by geoipupdate.
//
// The snapshot wrongly places the private networks 172.16.0.0/12 and
// 192.168.0.0/16 in AU, so this database never places private, loopback,
// link-local or multicast addresses: a Store reports them as internal.
// Other quirks are kept (see data/LICENSE-DATA.md).
//
// The first call decompresses (about 8 MB) and verifies it; every call returns
// the same *Database.
func Embedded() (*Database, error) {
	embedded.once.Do(func() {
		embedded.db, embedded.err = openEmbedded()
	})
	return embedded.db, embedded.err
}

func openEmbedded() (*Database, error) {
	data, err := embeddedBytes()
	if err != nil {
		return nil, err
	}
	db, err := OpenBytes(embeddedSource, data)
	if err != nil {
		return nil, err
	}
	// The snapshot places 172.16.0.0/12 and 192.168.0.0/16 in AU; left
	// alone, every internal server on those networks would be "foreign".
	db.skipSpecial = true
	return db, nil
}

// embeddedBytes decompresses the embedded database.
func embeddedBytes() ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(embeddedGz))
	if err != nil {
		return nil, fmt.Errorf("geo: embedded database: %w", err)
	}
	// The gzip trailer ends with the uncompressed size (mod 4 GiB).
	var buf bytes.Buffer
	if n := len(embeddedGz); n >= 4 {
		buf.Grow(int(binary.LittleEndian.Uint32(embeddedGz[n-4:])) + bytes.MinRead)
	}
	if _, err := buf.ReadFrom(zr); err != nil {
		return nil, fmt.Errorf("geo: embedded database: %w", err)
	}
	return buf.Bytes(), nil
}

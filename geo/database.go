package geo

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/oschwald/maxminddb-golang/v2"
)

// Database is one opened, verified, immutable MaxMind-format database.
//
// It is safe for concurrent use and is never closed by this package (see the
// package documentation): drop the last reference and the garbage collector
// releases it.
type Database struct {
	reader *maxminddb.Reader
	info   Info
	// flat: country_code at the top level rather than country.iso_code.
	flat bool
	// ipv4Only: an IPv4 database; maxminddb returns an error (which
	// allocates) for an IPv6 lookup, so we answer "not placed" first.
	ipv4Only bool
	// skipSpecial: do not place loopback addresses either. No database
	// places private, link-local, multicast or unspecified addresses (the
	// geo-whois-asn-country data places 172.16.0.0/12 and 192.168.0.0/16
	// in AU, the embedded copy or a fresher one given as geo.database);
	// loopback is placed only by test fixtures, on purpose, so only the
	// embedded database skips it.
	skipSpecial bool
	caches
}

// Info describes the database: where it came from, its type, schema, build
// time and hash, for logs, the database_info metric and the reload check.
// A nil Database has a zero Info.
func (d *Database) Info() Info {
	if d == nil {
		return Info{}
	}
	return d.info
}

// openError is what Open and OpenBytes return. Its message is written for the
// sysadmin reading the log: it names the file, says what is wrong with it and
// what to do. Unwrap exposes the cause (fs.ErrNotExist, maxminddb's
// InvalidDatabaseError) for errors.Is and errors.As.
type openError struct {
	msg string
	err error
}

func (e *openError) Error() string { return e.msg }
func (e *openError) Unwrap() error { return e.err }

func openErrorf(cause error, format string, args ...any) error {
	return &openError{msg: "geo: " + fmt.Sprintf(format, args...), err: cause}
}

// metadataMarker starts the metadata section, which the MaxMind DB spec puts
// in the last 128 KiB of the file.
var metadataMarker = []byte("\xAB\xCD\xEFMaxMind.com")

const metadataMaxSize = 128 << 10

// Open reads the MaxMind DB at path into memory, verifies its structure,
// and probes which schema its records use. Every failure is reported with
// the path and what to do about it: a missing, empty or truncated file, a
// file that is not an mmdb, a corrupt one (Reader.Verify fails), an
// ASN-only database, or records without any country field.
//
// The file is read, not memory-mapped: a mapped file that someone rewrites
// in place ("cp new.mmdb GeoLite2-Country.mmdb") would be truncated under
// the proxy and crash it with SIGBUS. Read once, the bytes belong to the
// Database, whatever happens to the file — at the price of holding the
// database in memory (about 10 MB for a country database, 60 MB for a city
// one).
func Open(path string) (*Database, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	return OpenBytes(path, data)
}

// readFile reads a database file, with the error messages of Open.
func readFile(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fileError(path, err)
	}
	if st.IsDir() {
		return nil, openErrorf(nil, "database %s is a directory, not an .mmdb file", path)
	}
	data, err := os.ReadFile(path) // #nosec G304 -- the admin chooses the database path.
	if err != nil {
		return nil, fileError(path, err)
	}
	return data, nil
}

func fileError(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return openErrorf(err, "database %s does not exist", path)
	}
	cause := err
	var pe *fs.PathError
	if errors.As(err, &pe) {
		cause = pe.Err // the path is already in our message
	}
	return openErrorf(err, "database %s cannot be read: %v", path, cause)
}

func emptyError(source string) error {
	return openErrorf(nil,
		"database %s is empty (0 bytes), not a MaxMind DB (.mmdb) file; download or copy it again",
		source)
}

func notMMDBError(source string) error {
	return openErrorf(nil,
		"database %s is not a MaxMind DB (.mmdb) file, or it is truncated: no metadata section found",
		source)
}

func corruptError(source string, err error) error {
	return openErrorf(err, "database %s is corrupt (%v); download or copy it again", source, err)
}

// OpenBytes opens a MaxMind DB held in memory, with the same checks as Open.
// source names it in errors and in Info.Source. The Database keeps data: the
// caller must not modify it afterwards.
func OpenBytes(source string, data []byte) (*Database, error) {
	if len(data) == 0 {
		return nil, emptyError(source)
	}
	if !bytes.Contains(data[len(data)-min(len(data), metadataMaxSize):], metadataMarker) {
		return nil, notMMDBError(source)
	}
	r, err := maxminddb.OpenBytes(data)
	if err != nil {
		return nil, corruptError(source, err)
	}
	sum := sha256.Sum256(data)
	return newDatabase(source, r, hex.EncodeToString(sum[:]))
}

// newDatabase verifies r and probes its schema.
func newDatabase(source string, r *maxminddb.Reader, sum string) (*Database, error) {
	if err := verify(r); err != nil {
		return nil, corruptError(source, err)
	}
	schema, flat, err := detectSchema(source, r)
	if err != nil {
		return nil, err
	}
	md := r.Metadata
	return &Database{
		reader:   r,
		flat:     flat,
		ipv4Only: md.IPVersion == 4,
		caches:   newCaches(),
		info: Info{
			Source:       source,
			DatabaseType: md.DatabaseType,
			Schema:       schema,
			BuildTime:    md.BuildTime().UTC(),
			IPVersion:    md.IPVersion,
			Description:  description(md.Description),
			SHA256:       sum,
		},
	}, nil
}

// verify runs Reader.Verify, which walks the whole search tree and every
// record it points to. Verify also insists on a non-empty description map,
// which the ip-location-db files (the embedded default among them) do not
// have and which sekisho never reads; a placeholder stands in for it during
// the check so that the tree and data are still verified.
func verify(r *maxminddb.Reader) error {
	desc := r.Metadata.Description
	if len(desc) == 0 {
		r.Metadata.Description = map[string]string{"en": "(none)"}
		defer func() { r.Metadata.Description = desc }()
	}
	return r.Verify()
}

func description(m map[string]string) string {
	if d, ok := m["en"]; ok {
		return d
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if len(keys) == 0 {
		return ""
	}
	return m[keys[0]]
}

// Probing stops after this many networks or distinct records: a country
// database answers on its first record; an ASN-only one never does.
const (
	probeNetworks = 1 << 16
	probeRecords  = 256
)

// detectSchema probes records, CoreDNS newGeoIP style, to choose the decoder:
// database_type is free text (IPinfo's is its import file name), so the
// records decide and the type only names things.
func detectSchema(source string, r *maxminddb.Reader) (schema string, flat bool, err error) {
	var p probe
	seen := make(map[uintptr]struct{})
	n := 0
	for res := range r.Networks() {
		if err := res.Err(); err != nil {
			return "", false, corruptError(source, err)
		}
		if n++; n > probeNetworks {
			break
		}
		if _, ok := seen[res.Offset()]; ok {
			continue
		}
		seen[res.Offset()] = struct{}{}
		if len(seen) > probeRecords {
			break
		}
		if err := res.Decode(&p); err != nil {
			return "", false, corruptError(source, err)
		}
		if p.placesCountry() {
			break
		}
	}
	dt := r.Metadata.DatabaseType
	switch {
	case p.nested:
		if strings.HasPrefix(strings.ToUpper(dt), "DBIP") {
			return schemaDBIP, false, nil
		}
		return schemaGeoIP2, false, nil
	case p.countryCode && (p.asn || strings.HasPrefix(strings.ToLower(dt), "ipinfo")):
		return schemaIPinfo, true, nil
	case p.countryCode:
		return schemaIPLocationDB, true, nil
	case p.countryString:
		return schemaIPinfo, true, nil
	case p.asNumber || p.asn || strings.Contains(strings.ToUpper(dt), "ASN"):
		return "", false, openErrorf(nil,
			"database %s is an ASN-only database (%s); sekisho needs a country database such as GeoLite2-Country",
			source, dt)
	default:
		return "", false, openErrorf(nil,
			"database %s has an unsupported schema (database_type %q): no record has a country field; "+
				"sekisho reads GeoIP2/GeoLite2 Country or City, DB-IP, IPinfo Lite and ip-location-db country databases",
			source, dt)
	}
}

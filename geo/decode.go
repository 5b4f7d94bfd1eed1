package geo

import (
	"sync"

	"github.com/oschwald/maxminddb-golang/v2/mmdbdata"
)

// recordDecoder reads the country (and ASN) out of one data record by walking
// it with maxminddb's cursor API instead of reflection: it compares map keys
// as bytes, skips every value it does not need, and keeps the country as an
// index into codes. It runs only when the per-database cache misses, and is
// pooled so that even a miss does not allocate once warm.
type recordDecoder struct {
	// flat selects the layout: country_code at the top level (IPinfo,
	// ip-location-db) rather than country.iso_code (GeoIP2, DB-IP).
	flat bool
	// country and fallback are codeIndex values; fallback is
	// registered_country (nested) or a two-letter "country" (flat), used
	// only when country is absent or empty.
	country, fallback uint16
	asn               uint32
}

var decoderPool = sync.Pool{New: func() any { return new(recordDecoder) }}

// UnmarshalMaxMindDBCursor implements mmdbdata.CursorUnmarshaler.
func (r *recordDecoder) UnmarshalMaxMindDBCursor(c mmdbdata.Cursor) (mmdbdata.Cursor, error) {
	if kind, err := c.Kind(); err != nil || kind != mmdbdata.KindMap {
		// Not a map: a record we cannot read places nothing.
		return c.Skip()
	}
	m, err := c.Map()
	if err != nil {
		return mmdbdata.Cursor{}, err
	}
	var next mmdbdata.Cursor
	for {
		key, val, ok := m.Next(next)
		if !ok {
			break
		}
		if r.flat {
			next, err = r.flatField(key, val)
		} else {
			next, err = r.nestedField(key, val)
		}
		if err != nil {
			return mmdbdata.Cursor{}, err
		}
	}
	return m.End()
}

func (r *recordDecoder) nestedField(key []byte, val mmdbdata.Cursor) (mmdbdata.Cursor, error) {
	switch string(key) {
	case "country":
		return readIn(val, "iso_code", &r.country, nil)
	case "registered_country":
		return readIn(val, "iso_code", &r.fallback, nil)
	case "traits":
		// GeoIP2 Enterprise and ISP-enriched City databases carry the ASN here.
		return readIn(val, "autonomous_system_number", nil, &r.asn)
	default:
		return val.Skip()
	}
}

func (r *recordDecoder) flatField(key []byte, val mmdbdata.Cursor) (mmdbdata.Cursor, error) {
	switch string(key) {
	case "country_code":
		return readCode(val, &r.country)
	case "country":
		// IPinfo Lite has the country's name here ("Japan"), which
		// readCode rejects; IPinfo's older country_asn files have the code.
		return readCode(val, &r.fallback)
	case "asn":
		return readASN(val, &r.asn)
	default:
		return val.Skip()
	}
}

// readIn walks the map at c and reads the value of key into code (a country
// code) or asn, skipping everything else; a value that is not a map is
// skipped whole.
func readIn(c mmdbdata.Cursor, key string, code *uint16, asn *uint32) (mmdbdata.Cursor, error) {
	if kind, err := c.Kind(); err != nil || kind != mmdbdata.KindMap {
		return c.Skip()
	}
	m, err := c.Map()
	if err != nil {
		return mmdbdata.Cursor{}, err
	}
	var next mmdbdata.Cursor
	for {
		k, v, ok := m.Next(next)
		if !ok {
			break
		}
		switch {
		case string(k) != key:
			next, err = v.Skip()
		case code != nil:
			next, err = readCode(v, code)
		default:
			next, err = readASN(v, asn)
		}
		if err != nil {
			return mmdbdata.Cursor{}, err
		}
	}
	return m.End()
}

// readCode stores the codeIndex of a string value; other kinds are skipped.
func readCode(c mmdbdata.Cursor, dst *uint16) (mmdbdata.Cursor, error) {
	if kind, err := c.Kind(); err != nil || kind != mmdbdata.KindString {
		return c.Skip()
	}
	s, next, err := c.ReadString()
	if err != nil {
		return mmdbdata.Cursor{}, err
	}
	*dst = codeIndex(s)
	return next, nil
}

// readASN accepts an unsigned number (GeoIP2) or a string "AS13335" (IPinfo).
func readASN(c mmdbdata.Cursor, dst *uint32) (mmdbdata.Cursor, error) {
	kind, err := c.Kind()
	if err != nil {
		return c.Skip()
	}
	switch kind {
	case mmdbdata.KindString:
		s, next, err := c.ReadString()
		if err != nil {
			return mmdbdata.Cursor{}, err
		}
		*dst = parseASN(s)
		return next, nil
	case mmdbdata.KindUint16, mmdbdata.KindUint32, mmdbdata.KindUint64:
		n, next, err := c.ReadUint()
		if err != nil {
			return mmdbdata.Cursor{}, err
		}
		if n <= 1<<32-1 {
			*dst = uint32(n)
		}
		return next, nil
	default:
		return c.Skip()
	}
}

// probe records which top-level fields a record has and of what kind; Open
// uses it to pick the schema, since database_type is free text.
type probe struct {
	nested        bool // country or registered_country is a map (GeoIP2, DB-IP)
	countryCode   bool // country_code is a string (IPinfo, ip-location-db)
	countryString bool // country is a two-letter string (old IPinfo country_asn files)
	asn           bool // asn (IPinfo)
	asNumber      bool // autonomous_system_number (GeoLite2-ASN, DB-IP ASN)
}

// UnmarshalMaxMindDBCursor implements mmdbdata.CursorUnmarshaler.
func (p *probe) UnmarshalMaxMindDBCursor(c mmdbdata.Cursor) (mmdbdata.Cursor, error) {
	if kind, err := c.Kind(); err != nil || kind != mmdbdata.KindMap {
		return c.Skip()
	}
	m, err := c.Map()
	if err != nil {
		return mmdbdata.Cursor{}, err
	}
	var next mmdbdata.Cursor
	for {
		key, val, ok := m.Next(next)
		if !ok {
			break
		}
		kind, err := val.Kind()
		if err != nil {
			return mmdbdata.Cursor{}, err
		}
		switch string(key) {
		case "country", "registered_country":
			if kind == mmdbdata.KindMap {
				p.nested = true
			}
			if kind == mmdbdata.KindString && string(key) == "country" {
				s, succ, err := val.ReadString()
				if err != nil {
					return mmdbdata.Cursor{}, err
				}
				// A code (old IPinfo files), not a name (IPinfo Lite).
				p.countryString = p.countryString || codeIndex(s) != 0
				next = succ
				continue
			}
		case "country_code":
			p.countryCode = p.countryCode || kind == mmdbdata.KindString
		case "asn":
			p.asn = true
		case "autonomous_system_number":
			p.asNumber = true
		default:
		}
		if next, err = val.Skip(); err != nil {
			return mmdbdata.Cursor{}, err
		}
	}
	return m.End()
}

// placesCountry reports whether the probed records carry a country field.
func (p *probe) placesCountry() bool {
	return p.nested || p.countryCode || p.countryString
}

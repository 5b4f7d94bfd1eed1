package geo

import (
	"crypto/sha256"
	"encoding/hex"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Store holds the database in use and swaps in a new one on reload, so that
// the proxy keeps one long-lived object while the data underneath changes.
//
// Readers load an atomic pointer and never block; a swap publishes a new
// *Database and never closes the old one, because a lookup that loaded it may
// still be running (see the package documentation). Writers (Swap,
// ReloadFile) are serialized with each other.
type Store struct {
	db         atomic.Pointer[Database]
	internal4  []prefix4
	internal6  []prefix6
	m          *metrics
	mu         sync.Mutex // serializes writers and the metrics they set
	infoLabels []string   // current sekisho_geo_database_info series, guarded by mu
	now        func() time.Time
}

// teredo is the Teredo prefix (RFC 4380).
var teredo = netip.MustParsePrefix("2001::/32")

// DefaultInternal returns the networks that are internal unless the database
// places them: loopback, RFC 1918, CGNAT (100.64/10), link-local and IPv6
// unique-local. A fresh slice each call, so callers may append their own.
func DefaultInternal() []netip.Prefix {
	return []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("192.168.0.0/16"),
		netip.MustParsePrefix("100.64.0.0/10"),
		netip.MustParsePrefix("169.254.0.0/16"),
		netip.MustParsePrefix("fc00::/7"),
		netip.MustParsePrefix("fe80::/10"),
	}
}

// NewStore returns a Store serving db (nil places nothing: every address is
// internal or unknown). internal lists the networks reported as
// CountryInternal when the database does not place them; 4in6 prefixes are
// unmapped and invalid ones ignored. The metrics are registered on reg, which
// may be nil for none; NewStore panics if they are already registered there,
// as MustRegister does, since two Stores on one registry is a wiring bug.
func NewStore(db *Database, internal []netip.Prefix, reg prometheus.Registerer) *Store {
	s := &Store{m: newMetrics(reg), now: time.Now}
	for _, p := range internal {
		if !p.IsValid() {
			continue
		}
		if p.Addr().Is4In6() {
			bits := p.Bits() - 96
			if bits < 0 {
				continue // covers more than the mapped range; not an IPv4 network
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), bits)
		}
		p = p.Masked()
		hi, lo := words(p.Addr())
		if p.Addr().Is4() {
			mask := ^uint32(0) << (32 - p.Bits()) // a shift by 32 gives 0: /0
			s.internal4 = append(s.internal4, prefix4{uint32(lo), mask})
		} else {
			mhi, mlo := maskWords(p.Bits())
			s.internal6 = append(s.internal6, prefix6{hi, lo, mhi, mlo})
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.swapLocked(db)
	if db != nil {
		// The initial load counts as a successful load, as in blackbox.
		s.m.lastOK.Set(1)
		s.m.lastOKTime.Set(float64(s.now().UnixNano()) / 1e9)
	}
	return s
}

// Lookup says where addr is: the database's answer when it places the
// address; else CountryInternal when addr is in the internal networks; else
// CountryUnknown, which sekisho treats as foreign. 4in6 addresses are
// unmapped and zones ignored first. It does not allocate once warm.
func (s *Store) Lookup(addr netip.Addr) Location {
	addr = normalize(addr)
	if !addr.IsValid() || teredo.Contains(addr) {
		// A Teredo address (2001::/32) embeds its relay server's IPv4
		// address, and MaxMind databases place it there: the host behind it
		// may be anywhere. Nothing can place it, so it is unknown.
		s.m.unknownC.Inc()
		return unplaced
	}
	hi, lo := words(addr)
	var loc Location
	if db := s.db.Load(); db != nil {
		var ok bool
		if loc, ok = db.lookupWords(addr, hi, lo); ok {
			s.m.found.Inc()
			return loc
		}
	}
	if s.isInternal(addr.Is4(), hi, lo) {
		s.m.internal.Inc()
		return Location{Country: CountryInternal, ASN: loc.ASN}
	}
	s.m.unknownC.Inc()
	return Location{Country: CountryUnknown, ASN: loc.ASN}
}

// prefix4 and prefix6 are internal networks as masked words, which is what
// netip.Prefix.Contains computes on every call.
type prefix4 struct{ base, mask uint32 }

type prefix6 struct{ hi, lo, mhi, mlo uint64 }

func maskWords(bits int) (hi, lo uint64) {
	switch {
	case bits == 0:
		return 0, 0
	case bits <= 64:
		return ^uint64(0) << (64 - bits), 0
	case bits == 128:
		return ^uint64(0), ^uint64(0)
	default:
		return ^uint64(0), ^uint64(0) << (128 - bits)
	}
}

func (s *Store) isInternal(is4 bool, hi, lo uint64) bool {
	if is4 {
		v := uint32(lo)
		for _, p := range s.internal4 {
			if v&p.mask == p.base {
				return true
			}
		}
		return false
	}
	for _, p := range s.internal6 {
		if hi&p.mhi == p.hi && lo&p.mlo == p.lo {
			return true
		}
	}
	return false
}

// Database returns the database in use (nil if none), for its Info or for
// callers that want the database's own answer without the internal networks.
// Store.Lookup loads it afresh on every call, so a swap takes effect at once.
func (s *Store) Database() *Database {
	return s.db.Load()
}

// Swap makes db the database in use and updates the database metrics. The old
// database is not closed: lookups may still hold it. Swap does not touch the
// reload metrics; ReloadFile does.
func (s *Store) Swap(db *Database) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.swapLocked(db)
}

func (s *Store) swapLocked(db *Database) {
	s.db.Store(db)
	if s.infoLabels != nil {
		s.m.info.DeleteLabelValues(s.infoLabels...)
		s.infoLabels = nil
	}
	if db == nil {
		s.m.buildTime.Set(0)
		return
	}
	info := db.Info()
	s.infoLabels = []string{info.Source, info.DatabaseType, info.Schema}
	s.m.info.WithLabelValues(s.infoLabels...).Set(1)
	s.m.buildTime.Set(float64(info.BuildTime.Unix()))
}

// ReloadFile opens the database at path and swaps it in if its content
// changed: the file is hashed (SHA-256) and an unchanged file is a no-op that
// returns changed=false. A file that cannot be opened or verified leaves the
// database in use untouched and returns the error, as a bad rules file does;
// the reload metrics record the outcome. An unchanged file also sets
// sekisho_geo_last_reload_successful back to 1, so that putting the good file
// back clears an alert.
func (s *Store) ReloadFile(path string) (changed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := readFile(path)
	if err != nil {
		return false, s.failLocked(err)
	}
	sum := sha256.Sum256(data)
	if cur := s.db.Load(); cur != nil && cur.info.Source == path && cur.info.SHA256 == hex.EncodeToString(sum[:]) {
		s.m.lastOK.Set(1)
		return false, nil
	}
	db, err := OpenBytes(path, data)
	if err != nil {
		return false, s.failLocked(err)
	}
	s.swapLocked(db)
	s.m.reloadOK.Inc()
	s.m.lastOK.Set(1)
	s.m.lastOKTime.Set(float64(s.now().UnixNano()) / 1e9)
	return true, nil
}

func (s *Store) failLocked(err error) error {
	s.m.reloadFailed.Inc()
	s.m.lastOK.Set(0)
	return err
}

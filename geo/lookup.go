package geo

import (
	"encoding/binary"
	"net/netip"
	"sync/atomic"

	"github.com/oschwald/maxminddb-golang/v2"
)

// A lookup costs a walk down the search tree, 3 to 5 ns per bit: about 80 ns
// for an IPv4 /16 and 150 ns for an IPv6 /32 on a 2-core EPYC, most of it
// dependent memory loads. sekisho geolocates every address of every name it
// dials, and the same destinations come back all day, so a Database keeps
// two lock-free caches, both filled on first use and never invalidated: the
// database they describe never changes.
//
//   - addrs, by address: a hit skips the walk (about 10 ns).
//   - records, by the record's data-section offset: a miss of addrs that lands
//     on a known record skips decoding it. Country databases have a few
//     hundred distinct records (the embedded one 251, all in its first 2 KiB),
//     so after warm-up nothing is ever decoded again.
//
// Answers are packed into one word:
//
//	bits  0-9   country: index in codes + 1; 0 = not placed
//	bit   10    valid (a zero word is an empty slot)
//	bits 11-42  ASN
//	bits 43-63  records only: the offset above the slot index (tag)
const (
	codeMask   = 1<<10 - 1
	entryValid = 1 << 10
	asnShift   = 11
	tagShift   = 43
	answerMask = 1<<tagShift - 1

	recordBits  = 13 // 8192 slots, 64 KiB
	recordSlots = 1 << recordBits
	recordMask  = recordSlots - 1
	tagLimit    = 1 << (64 - tagShift) // offsets up to 2^34 are cached

	addrBits  = 12 // 4096 slots, 128 KiB
	addrSlots = 1 << addrBits
)

type caches struct {
	// records is direct-mapped by the low bits of the offset; an entry
	// carries the rest of the offset as its tag, so one atomic load gives
	// either this record's answer or a miss, never a torn read.
	records []atomic.Uint64
	// addrs is direct-mapped by a hash of the address. A slot spans three
	// words, so it is a seqlock: seq is odd while a writer fills it, and a
	// reader keeps what it read only if seq was even and did not change.
	addrs []addrSlot
}

type addrSlot struct {
	seq    atomic.Uint64
	hi, lo atomic.Uint64 // the address, as 16 bytes
	answer atomic.Uint64
}

func newCaches() caches {
	return caches{
		records: make([]atomic.Uint64, recordSlots),
		addrs:   make([]addrSlot, addrSlots),
	}
}

// unplaced is returned for addresses the database does not place.
var unplaced = Location{Country: CountryUnknown}

// Lookup says where addr is according to this database alone. The bool is
// true when the database placed it, that is gave it a country; otherwise the
// Location's Country is CountryUnknown (Store.Lookup is what tells internal
// addresses apart) and its ASN may still be set.
//
// A 4in6 address (::ffff:1.2.3.4) is looked up as its IPv4 address and a zone
// is ignored. Lookup does not allocate, and once an address or its record has
// been seen it neither decodes nor (for the address) walks the tree. A nil
// Database places nothing.
func (d *Database) Lookup(addr netip.Addr) (Location, bool) {
	if d == nil {
		return unplaced, false
	}
	return d.lookup(normalize(addr))
}

// lookup expects a normalized address.
func (d *Database) lookup(addr netip.Addr) (Location, bool) {
	if !addr.IsValid() {
		return unplaced, false
	}
	hi, lo := words(addr)
	return d.lookupWords(addr, hi, lo)
}

// words returns the 16-byte form of addr as two big-endian words.
func words(addr netip.Addr) (hi, lo uint64) {
	a := addr.As16()
	return binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(a[8:])
}

// lookupWords is lookup for a valid, normalized address and its words.
func (d *Database) lookupWords(addr netip.Addr, hi, lo uint64) (Location, bool) {
	is4 := addr.Is4()
	if special(hi, lo, is4) && (d.skipSpecial || !loopback(hi, lo, is4)) {
		return unplaced, false
	}
	if !is4 {
		if d.ipv4Only {
			return unplaced, false
		}
		if hi == 0 && lo>>32 == 0 {
			// ::/96 (::1 among them) is the IPv4 subtree of an IPv6
			// database: start there rather than walk 96 zero bits.
			addr = netip.AddrFrom4([4]byte{byte(lo >> 24), byte(lo >> 16), byte(lo >> 8), byte(lo)})
			lo |= 0xffff << 32 // the key of that IPv4 address
		}
	}
	e := d.answer(addr, hi, lo)
	asn := uint32(e >> asnShift)
	i := e & codeMask
	if i == 0 {
		return Location{Country: CountryUnknown, ASN: asn}, false
	}
	return Location{Country: codes[i-1], ASN: asn}, true
}

// special reports addresses that no public registry places: RFC 1918 and
// unique-local, loopback, link-local, multicast and unspecified. It is
// netip's IsPrivate, IsLoopback, ... on the address as two words.
func special(hi, lo uint64, is4 bool) bool {
	if is4 {
		v := uint32(lo)
		return v>>24 == 10 || v>>20 == 172<<4|1 || v>>16 == 192<<8|168 || // RFC 1918
			v>>24 == 127 || v>>16 == 169<<8|254 || // loopback, link-local
			v>>28 == 0xe || v == 0 // multicast, unspecified
	}
	return hi>>57 == 0xfc>>1 || hi>>54 == 0xfe80>>6 || hi>>56 == 0xff || // ULA, link-local, multicast
		(hi == 0 && lo <= 1) // unspecified, loopback
}

// loopback reports 127.0.0.0/8 and ::1.
func loopback(hi, lo uint64, is4 bool) bool {
	if is4 {
		return uint32(lo)>>24 == 127
	}
	return hi == 0 && lo == 1
}

// answer returns the packed answer for addr (hi, lo: its 16-byte form) from
// the address cache, or walks the tree and caches it.
func (d *Database) answer(addr netip.Addr, hi, lo uint64) uint64 {
	slot := &d.addrs[(hi*0x9E3779B97F4A7C15^lo*0xC2B2AE3D27D4EB4F)>>(64-addrBits)]
	seq := slot.seq.Load()
	if seq&1 == 0 && slot.hi.Load() == hi && slot.lo.Load() == lo {
		if e := slot.answer.Load(); e&entryValid != 0 && slot.seq.Load() == seq {
			return e
		}
	}
	e := d.walk(addr)
	// Claim the slot only if it was stable when we read it; a concurrent
	// writer makes us skip caching, never wait.
	if seq&1 == 0 && slot.seq.CompareAndSwap(seq, seq+1) {
		slot.hi.Store(hi)
		slot.lo.Store(lo)
		slot.answer.Store(e)
		slot.seq.Store(seq + 2)
	}
	return e
}

// walk looks addr up in the tree and returns the answer for its record.
func (d *Database) walk(addr netip.Addr) uint64 {
	res := d.reader.Lookup(addr)
	if !res.Found() {
		// Not in the tree, or a lookup error on a tree that Verify
		// accepted; either way we cannot place it.
		return entryValid
	}
	return d.record(res) & answerMask
}

// record returns the packed answer for the record res points to, decoding and
// caching it on a miss.
func (d *Database) record(res maxminddb.Result) uint64 {
	off := uint64(res.Offset())
	tag := off >> recordBits
	slot := &d.records[off&recordMask]
	if tag < tagLimit {
		if e := slot.Load(); e&entryValid != 0 && e>>tagShift == tag {
			return e
		}
	}
	e := d.decode(res)
	if tag < tagLimit {
		slot.Store(e | tag<<tagShift)
	}
	return e
}

// decode reads one record. A record we cannot decode places nothing, which
// sekisho treats as foreign: failing closed.
func (d *Database) decode(res maxminddb.Result) uint64 {
	rd, _ := decoderPool.Get().(*recordDecoder)
	if rd == nil {
		rd = new(recordDecoder)
	}
	*rd = recordDecoder{flat: d.flat}
	err := res.Decode(rd)
	country, asn := rd.country, rd.asn
	if country == 0 {
		country = rd.fallback
	}
	decoderPool.Put(rd)
	if err != nil {
		return entryValid
	}
	return uint64(country) | entryValid | uint64(asn)<<asnShift
}

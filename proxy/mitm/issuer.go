package mitm

import (
	"container/list"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
)

// IssuerOptions tune leaf issuance; zero values take the defaults.
type IssuerOptions struct {
	// MaxEntries bounds the certificate cache (10000 hosts).
	MaxEntries int
	// Validity of a leaf (7 days). A cached leaf is reissued once less
	// than a tenth of its validity is left.
	Validity time.Duration
	// Backdate makes a leaf valid from this long before it was signed (1h),
	// for clients whose clocks lag.
	Backdate time.Duration
	// Now is the clock (time.Now).
	Now func() time.Time
}

// Issuer signs and caches leaf certificates. It is safe for concurrent use.
type Issuer struct {
	ca    *CA
	key   *ecdsa.PrivateKey
	opt   IssuerOptions
	group singleflight.Group

	mu    sync.Mutex
	lru   *list.List // of *entry, most recent first
	index map[string]*list.Element

	issued  prometheus.Counter
	hits    prometheus.Counter
	entries prometheus.Gauge
	caEnd   prometheus.Gauge
	signSec prometheus.Histogram
}

type entry struct {
	host  string
	cert  *tls.Certificate
	renew time.Time // reissue after this
}

// NewIssuer creates an issuer signing with ca. Metrics are registered on reg
// when it is not nil.
func NewIssuer(ca *CA, opt IssuerOptions, reg prometheus.Registerer) (*Issuer, error) {
	if opt.MaxEntries <= 0 {
		opt.MaxEntries = 10000
	}
	if opt.Validity <= 0 {
		opt.Validity = 7 * 24 * time.Hour
	}
	if opt.Backdate <= 0 {
		opt.Backdate = time.Hour
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	i := &Issuer{
		ca:    ca,
		key:   key,
		opt:   opt,
		lru:   list.New(),
		index: map[string]*list.Element{},
		issued: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sekisho_tls_certificates_issued_total",
			Help: "Leaf certificates signed for intercepted connections (cache misses and renewals).",
		}),
		hits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sekisho_tls_certificate_cache_hits_total",
			Help: "Intercepted handshakes served with a cached leaf certificate.",
		}),
		entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sekisho_tls_certificate_cache_entries",
			Help: "Leaf certificates in the cache.",
		}),
		caEnd: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sekisho_tls_ca_expiry_timestamp_seconds",
			Help: "Unix time when the interception CA certificate expires.",
		}),
		signSec: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "sekisho_tls_certificate_sign_seconds",
			Help:    "Time to sign one leaf certificate.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .05},
		}),
	}
	i.caEnd.Set(float64(ca.Cert.NotAfter.Unix()))
	if reg != nil {
		reg.MustRegister(i.issued, i.hits, i.entries, i.caEnd, i.signSec)
	}
	return i, nil
}

// CA is the authority the issuer signs with.
func (i *Issuer) CA() *CA { return i.ca }

// Certificate returns a leaf for host (a name or an IP literal), from the
// cache when a fresh one is there. Concurrent calls for the same host that
// miss the cache wait for one signature.
func (i *Issuer) Certificate(host string) (*tls.Certificate, error) {
	now := i.opt.Now()
	if c := i.lookup(host, now); c != nil {
		i.hits.Inc()
		return c, nil
	}
	v, err, _ := i.group.Do(host, func() (any, error) {
		if c := i.lookup(host, i.opt.Now()); c != nil {
			return c, nil // another caller just stored it
		}
		c, renew, err := i.sign(host)
		if err != nil {
			return nil, err
		}
		i.store(host, c, renew)
		return c, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*tls.Certificate), nil
}

// Fetch implements goproxy.CertStorage: it ignores goproxy's generator and
// issues its own leaf, so that every intercepted host gets the same kind of
// certificate whichever path asked.
func (i *Issuer) Fetch(hostname string, _ func() (*tls.Certificate, error)) (*tls.Certificate, error) {
	return i.Certificate(hostname)
}

func (i *Issuer) lookup(host string, now time.Time) *tls.Certificate {
	i.mu.Lock()
	defer i.mu.Unlock()
	el, ok := i.index[host]
	if !ok {
		return nil
	}
	e := el.Value.(*entry)
	if now.After(e.renew) {
		return nil
	}
	i.lru.MoveToFront(el)
	return e.cert
}

func (i *Issuer) store(host string, c *tls.Certificate, renew time.Time) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if el, ok := i.index[host]; ok {
		el.Value = &entry{host: host, cert: c, renew: renew}
		i.lru.MoveToFront(el)
		return
	}
	i.index[host] = i.lru.PushFront(&entry{host: host, cert: c, renew: renew})
	for i.lru.Len() > i.opt.MaxEntries {
		old := i.lru.Back()
		i.lru.Remove(old)
		delete(i.index, old.Value.(*entry).host)
	}
	i.entries.Set(float64(i.lru.Len()))
}

// Len is the number of cached certificates.
func (i *Issuer) Len() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.lru.Len()
}

func (i *Issuer) sign(host string) (*tls.Certificate, time.Time, error) {
	start := time.Now()
	now := i.opt.Now()
	serial, err := randomSerial()
	if err != nil {
		return nil, time.Time{}, err
	}
	if !now.Before(i.ca.Cert.NotAfter) {
		// A leaf past its CA is rejected by every client: say why instead.
		return nil, time.Time{}, fmt.Errorf("the interception CA expired on %s: create a new one with sekisho ca init and roll it out",
			i.ca.Cert.NotAfter.Format(time.DateOnly))
	}
	notAfter := now.Add(i.opt.Validity)
	if notAfter.After(i.ca.Cert.NotAfter) {
		notAfter = i.ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: host, Organization: i.ca.Cert.Subject.Organization},
		NotBefore:             now.Add(-i.opt.Backdate),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	if len(host) > 64 {
		// RFC 5280 caps a CommonName at 64 characters; clients match on
		// the SAN anyway.
		tmpl.Subject.CommonName = ""
	}
	if a, err := netip.ParseAddr(host); err == nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, a.AsSlice())
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, i.ca.Cert, i.key.Public(), i.ca.Key)
	if err != nil {
		return nil, time.Time{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, time.Time{}, err
	}
	i.issued.Inc()
	i.signSec.Observe(time.Since(start).Seconds())
	// The chain includes the CA certificate: a client that trusts the CA by
	// its key (Chromium's --ignore-certificate-errors-spki-list) only sees
	// what the server sends.
	return &tls.Certificate{
		Certificate: [][]byte{der, i.ca.Cert.Raw},
		PrivateKey:  i.key,
		Leaf:        leaf,
	}, renewAt(now, notAfter, i.opt.Validity), nil
}

// renewAt is when a cached leaf is signed again: a tenth of its validity
// before it ends, but not sooner than a minute from now (a leaf cut short
// by its CA's end would otherwise be signed again on every handshake).
func renewAt(now, notAfter time.Time, validity time.Duration) time.Time {
	at := notAfter.Add(-validity / 10)
	if min := now.Add(time.Minute); at.Before(min) {
		at = min
		if at.After(notAfter) {
			at = notAfter
		}
	}
	return at
}

package mitm

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func TestInitCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	now := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	ca, err := InitCA(dir, "Example City Hall", now)
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid || c.MaxPathLen != 0 || !c.MaxPathLenZero {
		t.Errorf("basic constraints: CA %v, maxpath %d/%v", c.IsCA, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Error("the CA must be allowed to sign certificates")
	}
	if pk, ok := c.PublicKey.(*ecdsa.PublicKey); !ok || pk.Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", c.PublicKey)
	}
	if got := c.NotAfter.Sub(now); got < 10*365*24*time.Hour || got > 11*365*24*time.Hour {
		t.Errorf("validity %v, want 10 years", got)
	}
	if len(c.Subject.Organization) != 1 || c.Subject.Organization[0] != "Example City Hall" || !strings.Contains(c.Subject.CommonName, "Example City Hall") {
		t.Errorf("subject %v", c.Subject)
	}
	st, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v), want 0600", st.Mode().Perm(), err)
	}
	if _, err := InitCA(dir, "Other", now); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second init must refuse to overwrite: %v", err)
	}
	if _, err := InitCA(t.TempDir(), "", now); err == nil {
		t.Error("an organisation is required")
	}
	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Cert.Equal(ca.Cert) || len(ca.Fingerprint()) != 95 {
		t.Errorf("loaded CA differs, or fingerprint %q is not 32 colon-separated bytes", ca.Fingerprint())
	}
	if der := ca.DER(); len(der) == 0 || !strings.HasPrefix(string(ca.PEM()), "-----BEGIN CERTIFICATE-----") {
		t.Error("PEM/DER export")
	}
}

func TestLoadCARefusesExposedKey(t *testing.T) {
	dir := t.TempDir()
	if _, err := InitCA(dir, "City", time.Now()); err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, KeyFile)
	for _, mode := range []os.FileMode{0o644, 0o604, 0o660, 0o670, 0o606} {
		if err := os.Chmod(key, mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadCA(dir)
		if err == nil || !strings.Contains(err.Error(), "chmod 600 "+key) {
			t.Errorf("mode %04o: %v; want a refusal that says how to fix it", mode, err)
		}
	}
	// Group read by our own group (Kubernetes fsGroup 0440, root:sekisho
	// 0640) is accepted; by a group we are not in, refused.
	for _, mode := range []os.FileMode{0o600, 0o400, 0o640, 0o440} {
		_ = os.Chmod(key, mode)
		if _, err := LoadCA(dir); err != nil {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
	if os.Getuid() == 0 {
		_ = os.Chmod(key, 0o640)
		if err := os.Chown(key, 0, 4242); err == nil && !inGroup(4242) {
			if _, err := LoadCA(dir); err == nil || !strings.Contains(err.Error(), "not in") {
				t.Errorf("group-readable by a foreign group: %v", err)
			}
		}
		_ = os.Chown(key, 0, os.Getegid())
	}
	_ = os.Chmod(key, 0o600)

	other := t.TempDir()
	if _, err := InitCA(other, "Other", time.Now()); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(other, KeyFile))
	_ = os.WriteFile(key, data, 0o600)
	if _, err := LoadCA(dir); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Errorf("a key of another CA: %v", err)
	}
	if _, err := LoadCA(t.TempDir()); err == nil || !strings.Contains(err.Error(), "sekisho ca init") {
		t.Errorf("missing CA: %v", err)
	}
}

func newIssuer(t *testing.T, opt IssuerOptions) (*Issuer, *prometheus.Registry) {
	t.Helper()
	ca, err := InitCA(t.TempDir(), "City", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	i, err := NewIssuer(ca, opt, reg)
	if err != nil {
		t.Fatal(err)
	}
	return i, reg
}

func counter(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			return metricValue(m)
		}
	}
	return 0
}

func metricValue(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

func TestIssuerLeaf(t *testing.T) {
	i, _ := newIssuer(t, IssuerOptions{})
	for _, host := range []string{"files.example.com", "192.0.2.7", "2001:db8::1"} {
		c, err := i.Certificate(host)
		if err != nil {
			t.Fatal(err)
		}
		leaf := c.Leaf
		pool := x509.NewCertPool()
		pool.AddCert(i.CA().Cert)
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: pool}); err != nil {
			t.Errorf("%s: %v", host, err)
		}
		if len(c.Certificate) != 2 {
			t.Errorf("%s: chain of %d; the CA goes along with the leaf", host, len(c.Certificate))
		}
	}
}

func TestIssuerCacheAndRenewal(t *testing.T) {
	now := time.Now()
	clock := func() time.Time { return now }
	i, reg := newIssuer(t, IssuerOptions{MaxEntries: 2, Validity: 10 * time.Hour, Now: clock})
	a1, _ := i.Certificate("a.example")
	a2, _ := i.Certificate("a.example")
	if a1 != a2 || counter(t, reg, "sekisho_tls_certificate_cache_hits_total") != 1 {
		t.Fatal("second request for a host must be a cache hit")
	}
	_, _ = i.Certificate("b.example")
	_, _ = i.Certificate("c.example") // evicts a (least recently used)
	if i.Len() != 2 || counter(t, reg, "sekisho_tls_certificate_cache_entries") != 2 {
		t.Fatalf("cache holds %d, want the bound 2", i.Len())
	}
	a3, _ := i.Certificate("a.example")
	if a3 == a1 {
		t.Error("an evicted host must get a new certificate")
	}
	// Renewal: once less than a tenth of the validity is left.
	now = now.Add(9*time.Hour + 30*time.Minute)
	a4, _ := i.Certificate("a.example")
	if a4 == a3 {
		t.Error("a certificate near its end must be reissued")
	}
	if got := counter(t, reg, "sekisho_tls_certificates_issued_total"); got != 5 {
		t.Errorf("issued %v, want 5", got)
	}
}

func TestIssuerSingleflight(t *testing.T) {
	i, reg := newIssuer(t, IssuerOptions{})
	var wg sync.WaitGroup
	certs := make([]any, 64)
	for n := range certs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := i.Certificate("busy.example")
			if err != nil {
				t.Error(err)
			}
			certs[n] = c
		}()
	}
	wg.Wait()
	if got := counter(t, reg, "sekisho_tls_certificates_issued_total"); got != 1 {
		t.Errorf("64 concurrent first requests signed %v certificates, want 1", got)
	}
	for _, c := range certs {
		if c != certs[0] {
			t.Fatal("every caller must get the same certificate")
		}
	}
}

func BenchmarkIssuer(b *testing.B) {
	ca, err := InitCA(b.TempDir(), "City", time.Now())
	if err != nil {
		b.Fatal(err)
	}
	i, _ := NewIssuer(ca, IssuerOptions{}, nil)
	b.Run("warm", func(b *testing.B) {
		_, _ = i.Certificate("warm.example")
		b.ReportAllocs()
		for b.Loop() {
			_, _ = i.Certificate("warm.example")
		}
	})
	b.Run("cold", func(b *testing.B) {
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			n++
			_, _ = i.Certificate("host" + string(rune('a'+n%26)) + ".cold" + itoa(n) + ".example")
		}
	})
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

// TestCAExpiry: in the CA's last hours, a leaf (cut at the CA's end) is
// still cached rather than signed on every handshake; once the CA has
// expired, signing fails with a message that says what to do, rather than
// making a leaf that ends before it starts.
func TestCAExpiry(t *testing.T) {
	start := time.Now()
	ca, err := InitCA(t.TempDir(), "City", start.AddDate(-10, 0, 0).Add(time.Hour)) // ends in about an hour
	if err != nil {
		t.Fatal(err)
	}
	now := start
	i, err := NewIssuer(ca, IssuerOptions{Now: func() time.Time { return now }}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := i.Certificate("a.example")
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := i.Certificate("a.example"); a != b {
		t.Errorf("near the CA's end every handshake signs a new leaf (leaf ends %v)", a.Leaf.NotAfter)
	}
	if !a.Leaf.NotAfter.Equal(ca.Cert.NotAfter) {
		t.Errorf("leaf ends %v, want the CA's end %v", a.Leaf.NotAfter, ca.Cert.NotAfter)
	}
	now = start.Add(3 * time.Hour) // the CA ended two hours ago
	if _, err := i.Certificate("b.example"); err == nil || !strings.Contains(err.Error(), "sekisho ca init") {
		t.Errorf("signing with an expired CA: %v, want an error saying to create a new CA", err)
	}
}

// TestLongNameLeaf: a host name over 64 characters (RFC 5280's cap on a
// CommonName) gets a leaf with the name in its SAN only, which verifies.
func TestLongNameLeaf(t *testing.T) {
	ca, err := InitCA(t.TempDir(), "City", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	i, err := NewIssuer(ca, IssuerOptions{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	host := strings.Repeat("a", 60) + ".example.jp"
	c, err := i.Certificate(host)
	if err != nil {
		t.Fatal(err)
	}
	if c.Leaf.Subject.CommonName != "" {
		t.Errorf("CommonName %q over 64 characters", c.Leaf.Subject.CommonName)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	if _, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots}); err != nil {
		t.Errorf("leaf does not verify for %s: %v", host, err)
	}
}

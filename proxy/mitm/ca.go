// Package mitm holds sekisho's certificate authority and issues the leaf
// certificates that TLS interception presents to clients.
//
// Admins create the CA once (`sekisho ca init`), roll its certificate out to
// staff PCs and phones, and keep its key readable by sekisho alone: a CA key
// that others can read lets them impersonate any site to every PC that trusts
// it, so sekisho refuses to start with one.
//
// Leaves are ECDSA P-256, valid for a short time (7 days by default, backdated
// an hour for clocks that lag), named for exactly one host or IP, and cached
// in a bounded LRU. Concurrent first requests for a host produce one
// signature (singleflight). All leaves share one private key, generated at
// start and never written to disk: what an intercepted connection needs to be
// private is the CA key, and a per-leaf key would cost a key generation per
// cold handshake.
//
// Non-goals: mitm does not decide what to intercept (the rules do), and it
// does not speak to upstream servers.
package mitm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// File names inside a CA directory.
const (
	CertFile = "ca.crt"
	KeyFile  = "ca.key"
)

// CA is a loaded certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
	Dir  string
}

// InitCA creates a new CA in dir: an ECDSA P-256 root valid for ten years,
// named for org, with its key written 0600. It refuses to overwrite an
// existing CA: replacing it would break every PC that trusts the old one.
func InitCA(dir, org string, now time.Time) (*CA, error) {
	if org == "" {
		return nil, errors.New("an organisation name is needed (it appears in every browser's certificate viewer)")
	}
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	for _, p := range []string{certPath, keyPath} {
		if _, err := os.Stat(p); err == nil {
			return nil, fmt.Errorf("%s already exists; a new CA would have to be rolled out to every PC again — remove the directory first if that is what you want", p)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:         "sekisho CA — " + org,
			Organization:       []string{org},
			OrganizationalUnit: []string{"sekisho egress proxy"},
		},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := writeFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, err
	}
	if err := writeFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, Dir: dir}, nil
}

func writeFile(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// LoadCA reads dir/ca.crt and dir/ca.key. The key must not be readable or
// writable by group or others; the error says how to fix it.
func LoadCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	st, err := os.Stat(keyPath)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("CA key %s does not exist; create a CA with: sekisho ca init --dir %s --org \"Your City\"", keyPath, dir)
		}
		return nil, fmt.Errorf("CA key: %w", err)
	}
	if err := checkKeyMode(keyPath, st); err != nil {
		return nil, err
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("CA key: %w", err)
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	cb, _ := pem.Decode(certPEM)
	if cb == nil || cb.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("CA certificate %s: no PEM CERTIFICATE block", certPath)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("CA certificate %s: %w", certPath, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("CA certificate %s is not a CA certificate (basic constraints CA:FALSE)", certPath)
	}
	kb, _ := pem.Decode(keyPEM)
	if kb == nil {
		return nil, fmt.Errorf("CA key %s: no PEM block", keyPath)
	}
	var key any
	switch kb.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(kb.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(kb.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(kb.Bytes)
	default:
		err = fmt.Errorf("unsupported PEM block %q", kb.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("CA key %s: %w", keyPath, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("CA key %s cannot sign", keyPath)
	}
	if !publicKeysEqual(signer.Public(), cert.PublicKey) {
		return nil, fmt.Errorf("CA key %s does not belong to the certificate %s", keyPath, certPath)
	}
	return &CA{Cert: cert, Key: signer, Dir: dir}, nil
}

// checkKeyMode refuses a CA key that others can access, or that its group
// can write. Group read is accepted only for a group this process belongs
// to: that is how Kubernetes mounts a Secret for a non-root user (fsGroup,
// mode 0440), and how a root:sekisho 0640 file looks on a server.
func checkKeyMode(keyPath string, st fs.FileInfo) error {
	perm := st.Mode().Perm()
	fix := fmt.Sprintf("fix it with: chmod 600 %s (and chown it to the user sekisho runs as)", keyPath)
	switch {
	case perm&0o007 != 0:
		return fmt.Errorf("CA key %s is accessible by others (mode %04o): anyone who can read it can impersonate every web site to every PC that trusts the CA; %s", keyPath, perm, fix)
	case perm&0o030 != 0:
		return fmt.Errorf("CA key %s is writable or executable by its group (mode %04o); %s", keyPath, perm, fix)
	case perm&0o040 != 0:
		gid, ok := fileGroup(st)
		if !ok || !inGroup(gid) {
			return fmt.Errorf("CA key %s is readable by a group this process is not in (mode %04o): those users could impersonate every web site to every PC that trusts the CA; %s", keyPath, perm, fix)
		}
	}
	return nil
}

func inGroup(gid int) bool {
	if gid == os.Getegid() {
		return true
	}
	groups, _ := os.Getgroups()
	for _, g := range groups {
		if g == gid {
			return true
		}
	}
	return false
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

// PEM is the CA certificate in PEM form, for onboarding.
func (ca *CA) PEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw})
}

// DER is the CA certificate in DER form (what Windows and Android install
// from a ".cer"/".crt" download).
func (ca *CA) DER() []byte { return ca.Cert.Raw }

// Fingerprint is the SHA-256 fingerprint of the certificate, as browsers'
// certificate viewers show it ("AB:CD:...").
func (ca *CA) Fingerprint() string {
	sum := sha256.Sum256(ca.Cert.Raw)
	var b strings.Builder
	for i, c := range sum {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02X", c)
	}
	return b.String()
}

func randomSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

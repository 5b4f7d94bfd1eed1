package proxytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/netip"
	"sync"
	"time"
)

// UpstreamCA is the test CA that signs the TLS test sites' certificates:
// what a public CA is to real servers. sekisho is told to trust it
// (proxy.Config.UpstreamRoots); clients never see it when a tunnel is
// intercepted, and do when it is not.
type UpstreamCA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte
	Pool *x509.CertPool
}

var upstreamCA = sync.OnceValue(func() *UpstreamCA {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sekisho test upstream CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		panic(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &UpstreamCA{Cert: cert, Key: key, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), Pool: pool}
})

// TestUpstreamCA returns the test upstream CA.
func TestUpstreamCA() *UpstreamCA { return upstreamCA() }

// siteNames are the names the TLS test sites' certificate is valid for.
// "wrongname.example" resolves to the US site but is not among them: a
// request for it meets a certificate for other names.
var siteNames = []string{
	"jp.example", "kr.example", "cn.example", "us.example", "unknown.example",
	"mixed.example", "upload.line-scdn.net", "obs.line-scdn.net", "v6.example",
}

var siteCert = sync.OnceValue(func() tls.Certificate {
	ca := upstreamCA()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "sekisho test sites"},
		DNSNames:     siteNames,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, a := range []netip.Addr{AddrJP, AddrKR, AddrCN, AddrUS, AddrUnknown, AddrJP6} {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(a.AsSlice()))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		panic(err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Cert.Raw}, PrivateKey: key}
})

// siteTLSConfig is the TLS test sites' server configuration.
func siteTLSConfig() *tls.Config {
	return &tls.Config{Certificates: []tls.Certificate{siteCert()}, NextProtos: []string{"h2", "http/1.1"}}
}

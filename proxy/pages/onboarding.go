package pages

import (
	"crypto/sha256"
	"encoding/base64"
	"html/template"
	"strings"
	"time"
)

// PageCSP is the Content-Security-Policy of every page sekisho writes but
// the self-test: nothing may load, run, submit or frame.
const PageCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// The self-test hosts: names under SelftestDomain are answered by sekisho
// itself and are never resolved or dialed. ".invalid" can never be a real
// name (RFC 6761), so only a browser that sends them to sekisho gets an
// answer.
const (
	SelftestDomain     = "selftest.sekisho.invalid"
	SelftestPACHost    = "pac-check." + SelftestDomain    // reached over HTTP: the PAC is in effect
	SelftestCAHost     = "ca-check." + SelftestDomain     // reached over HTTPS: the CA is trusted
	SelftestUploadHost = "upload-check." + SelftestDomain // a test upload, decided as foreign
)

// IsSelftestHost reports whether a normalised host is one of sekisho's
// self-test names (or any other name under SelftestDomain).
func IsSelftestHost(host string) bool {
	return host == SelftestDomain || strings.HasSuffix(host, "."+SelftestDomain)
}

// Onboarding is what the start page (GET / on the proxy port) shows.
type Onboarding struct {
	// Intercept is true when TLS interception is on: the page then offers
	// the CA certificate.
	Intercept   bool
	CASubject   string // the CA certificate's subject, as certificate viewers show it
	Fingerprint string // SHA-256, "AB:CD:..."
	CANotAfter  time.Time
	// PACURL is the PAC file's URL as this client reaches sekisho.
	PACURL   string
	Helpdesk string
}

// RenderOnboarding returns the content type and body of the start page.
// Serve it with PageCSP.
func RenderOnboarding(o *Onboarding) (string, []byte) {
	data := struct {
		*Onboarding
		NotAfter string
	}{Onboarding: o}
	if !o.CANotAfter.IsZero() {
		data.NotAfter = o.CANotAfter.Format(time.DateOnly)
	}
	return render("onboarding.html", data)
}

// Selftest is what the self-test page (GET /selftest) needs.
type Selftest struct {
	Intercept bool   // with interception off, the CA check does not apply
	PACURL    string // shown in the advice when the PAC check fails
	Client    string // the client's address as sekisho sees it
	Helpdesk  string
}

// selftestJS is the self-test's script; it runs under SelftestCSP, which
// allows exactly this script by its hash.
var selftestJS = func() string {
	b, err := files.ReadFile("templates/selftest.js")
	if err != nil {
		panic(err)
	}
	return string(b)
}()

// SelftestCSP allows the self-test page its one inline script (by hash)
// and requests to the self-test hosts, and nothing else.
var SelftestCSP = func() string {
	sum := sha256.Sum256([]byte(selftestJS))
	return "default-src 'none'; script-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'; " +
		"connect-src http://" + SelftestPACHost + " https://" + SelftestCAHost +
		" http://" + SelftestUploadHost + " https://" + SelftestUploadHost + "; " +
		"style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
}()

// RenderSelftest returns the content type and body of the self-test page.
// Serve it with SelftestCSP.
func RenderSelftest(s *Selftest) (string, []byte) {
	upload := "http://" + SelftestUploadHost + "/"
	if s.Intercept {
		upload = "https://" + SelftestUploadHost + "/"
	}
	data := struct {
		*Selftest
		PACCheck, CACheck, UploadCheck string
		Script                         template.JS
		Time                           string
	}{
		Selftest:    s,
		PACCheck:    "http://" + SelftestPACHost + "/",
		CACheck:     "https://" + SelftestCAHost + "/",
		UploadCheck: upload,
		Script:      template.JS(selftestJS),
		Time:        time.Now().Format(timeLayout),
	}
	return render("selftest.html", data)
}

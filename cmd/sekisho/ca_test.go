package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/proxy/mitm"
)

func TestCACommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	var out, errb bytes.Buffer
	if code := run([]string{"ca", "init", "--dir", dir, "--org", "Example City"}, &out, &errb); code != 0 {
		t.Fatalf("ca init: exit %d\n%s", code, errb.String())
	}
	if !strings.Contains(out.String(), "SHA-256") || !strings.Contains(out.String(), "Example City") {
		t.Errorf("ca init output:\n%s", out.String())
	}
	if code := run([]string{"ca", "init", "--dir", dir, "--org", "Again"}, &out, &errb); code != 1 {
		t.Errorf("ca init over an existing CA: exit %d", code)
	}
	out.Reset()
	if code := run([]string{"ca", "export", "--dir", dir}, &out, &errb); code != 0 {
		t.Fatalf("ca export: exit %d %s", code, errb.String())
	}
	b, _ := pem.Decode(out.Bytes())
	if b == nil || b.Type != "CERTIFICATE" {
		t.Fatalf("export is not PEM: %q", out.String())
	}
	der := filepath.Join(t.TempDir(), "ca.cer")
	if code := run([]string{"ca", "export", "--dir", dir, "--format", "der", "--out", der}, &out, &errb); code != 0 {
		t.Fatalf("ca export der: exit %d", code)
	}
	data, _ := os.ReadFile(der)
	if c, err := x509.ParseCertificate(data); err != nil || !c.IsCA {
		t.Fatalf("DER export: %v", err)
	}
	cfg := filepath.Join(t.TempDir(), "sekisho.yaml")
	writeFile(t, cfg, "version: 1\ntls:\n  ca_dir: "+dir+"\n")
	out.Reset()
	if code := run([]string{"ca", "show", "--config", cfg}, &out, &errb); code != 0 || !strings.Contains(out.String(), "valid") {
		t.Fatalf("ca show: exit %d %s", code, out.String())
	}
	if code := run([]string{"ca"}, &out, &errb); code != 2 {
		t.Errorf("ca without a command: exit %d", code)
	}
}

func TestRunRefusesExposedCAKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	var out, errb bytes.Buffer
	if code := run([]string{"ca", "init", "--dir", dir, "--org", "City"}, &out, &errb); code != 0 {
		t.Fatal(errb.String())
	}
	key := filepath.Join(dir, "ca.key")
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "sekisho.yaml")
	writeFile(t, cfg, "version: 1\nlisten: 127.0.0.1:0\nadmin_listen: \"\"\ntls:\n  ca_dir: "+dir+"\n")
	errb.Reset()
	code := run([]string{"run", "--config", cfg}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "chmod 600 "+key) {
		t.Fatalf("exit %d, stderr:\n%s\nwant a refusal saying: chmod 600 %s", code, errb.String(), key)
	}
}

// TestCAExpiryWarning: an interception CA that has expired or ends within
// 30 days is said so at start and by check.
func TestCAExpiryWarning(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name string
		ends time.Time
		want string
	}{
		{"far", now.AddDate(1, 0, 0), ""},
		{"soon", now.AddDate(0, 0, 10), "expires on"},
		{"expired", now.Add(-time.Hour), "expired on"},
	} {
		ca, err := mitm.InitCA(t.TempDir(), "City", tc.ends.AddDate(-10, 0, 0))
		if err != nil {
			t.Fatal(err)
		}
		issuer, err := mitm.NewIssuer(ca, mitm.IssuerOptions{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		got := caExpiryWarning(issuer, now)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/sekisho/sekisho/geo/geotest"
	"github.com/sekisho/sekisho/proxy/mitm"
)

// buildSekisho builds cmd/sekisho as a release does (CGO_ENABLED=0, as the
// Dockerfile), into dir. Profiles come from the admin listener
// (admin.pprof), so the profiled binary is the measured one.
func buildSekisho(ctx context.Context, root, dir, version string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "sekisho")
	ldflags := "-X main.version=" + strings.ReplaceAll(version, " ", "_")
	if _, err := runCmd(ctx, root, []string{"CGO_ENABLED=0"}, "go", "build", "-o", out, "-ldflags", ldflags, "./cmd/sekisho"); err != nil {
		return "", err
	}
	return out, nil
}

// sekishoFiles are the files every sekisho instance shares: the geo
// database, the rules and the interception CA.
type sekishoFiles struct {
	bin        string
	version    string // the checkout it was built from
	geoDB      string
	rules      string // plain: tunnels only
	rulesICPT  string // the same plus an inspection section
	caDir      string
	caPool     *x509.CertPool
	upstreamCA string
}

// setupSekisho writes the geo database (geotest's fixture: 127.0.1.0/24 is
// JP), the rules files and the CA, and checks the configuration.
func (b *bench) setupSekisho(ctx context.Context) error {
	d := filepath.Join(b.dir, "sekisho")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return err
	}
	f := &b.sk
	db, err := geotest.Build(geotest.CountryCode, geotest.Default)
	if err != nil {
		return fmt.Errorf("geo database: %w", err)
	}
	f.geoDB = filepath.Join(d, "geo.mmdb")
	if err := os.WriteFile(f.geoDB, db, 0o644); err != nil {
		return err
	}
	f.rules = filepath.Join(d, "rules.yaml")
	f.rulesICPT = filepath.Join(d, "rules-intercept.yaml")
	if err := os.WriteFile(f.rules, []byte(sekishoRules), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(f.rulesICPT, []byte(sekishoRules+sekishoInspection), 0o644); err != nil {
		return err
	}
	f.upstreamCA = filepath.Join(d, "upstream-ca.pem")
	if err := os.WriteFile(f.upstreamCA, b.up.CA.CertPEM, 0o644); err != nil {
		return err
	}
	f.caDir = filepath.Join(d, "ca")
	if _, err := runCmd(ctx, d, nil, f.bin, "ca", "init", "--dir", f.caDir, "--org", "sekisho-bench"); err != nil {
		return err
	}
	if f.caPool, err = readCertPool(filepath.Join(f.caDir, mitm.CertFile)); err != nil {
		return fmt.Errorf("sekisho CA: %w", err)
	}
	// Validate both configurations once, with sekisho's own checker.
	for _, m := range []mode{modePlain, modeIntercept} {
		cfg := filepath.Join(d, "check-"+m.String()+".yaml")
		if err := os.WriteFile(cfg, []byte(b.sekishoConfig(d, "127.0.0.1:1", "127.0.0.1:2", m)), 0o644); err != nil {
			return err
		}
		if _, err := runCmd(ctx, d, nil, f.bin, "check", "--config", cfg); err != nil {
			return err
		}
	}
	return nil
}

// sekishoConfig is the static configuration of one instance: audit log to
// a file (as deployed), the test geo database, loopback destinations
// allowed (the built-in deny list refuses loopback), and for interception
// the CA, the upstream test CA and the benchmark's host names.
func (b *bench) sekishoConfig(dir, addr, admin string, m mode) string {
	f := &b.sk
	rules := f.rules
	if m == modeIntercept {
		rules = f.rulesICPT
	}
	cfg := fmt.Sprintf(`version: 1
listen: %s
admin_listen: %s
rules: %s
geo:
  database: %s
log:
  audit: %s
  level: info
clients:
  allow: [127.0.0.0/8]
destinations:
  allow: [127.0.0.0/8]
limits:
  shutdown_timeout: 2s
`, addr, admin, q(rules), q(f.geoDB), q(filepath.Join(dir, "audit.jsonl")))
	if m == modeIntercept {
		cfg += fmt.Sprintf("tls:\n  ca_dir: %s\n  upstream_roots: [%s]\n", q(f.caDir), q(f.upstreamCA))
		// The interception names, the same file Squid reads.
		cfg += fmt.Sprintf("resolver:\n  hosts_file: %s\n", q(b.hosts.file))
	}
	if b.profiling {
		cfg += "admin:\n  pprof: true\n"
	}
	return cfg
}

// q quotes a YAML scalar.
func q(s string) string { return fmt.Sprintf("%q", s) }

// sekishoRules are realistic rules (after README's example): domestic JP,
// services, a client group, upload rules that look at the body's size,
// type and file parts, and the default tunnel budgets.
const sekishoRules = `version: 1
domestic: [JP]
report_only: false
default: allow
tunnel_upload_budget:
  foreign: 1MiB
  domestic: unlimited
client_groups:
  - name: staff
    title: 職員
    networks: [127.0.0.0/8]
services:
  - name: city-chat
    title: 庁内チャット
    domains: [chat.city.example.lg.jp]
rules:
  - name: allow-city-chat
    services: [city-chat]
    action: allow
  - name: no-line-uploads
    services: [line]
    upload: true
    action: block
  - name: no-foreign-images
    destinations: [foreign]
    content_types: ["image/*"]
    action: block
  - name: no-foreign-files
    destinations: [foreign]
    file_parts: true
    action: block
  - name: log-big-domestic-uploads
    destinations: [domestic]
    min_body_bytes: 100MiB
    action: log
  - name: block-foreign-uploads
    destinations: [foreign]
    upload: true
    action: block
`

// sekishoInspection opens the benchmark's HTTPS sites, and nothing else.
const sekishoInspection = `inspection:
  default: false
  rules:
    - name: open-bench
      domains: [` + benchDomain + `]
      inspect: true
`

// sekishoDef starts sekisho with a generated configuration.
func sekishoDef(b *bench) *proxyDef {
	return &proxyDef{
		name:       targetSekisho,
		intercepts: true,
		start: func(b *bench, dir, addr string, m mode) (*exec.Cmd, *x509.CertPool, error) {
			port, err := freePort()
			if err != nil {
				return nil, nil, err
			}
			admin := fmt.Sprintf("127.0.0.1:%d", port)
			if b.profiling {
				admin = b.pprofAddr // profileOne fetches the profiles there
			}
			cfg := filepath.Join(dir, "sekisho.yaml")
			if err := os.WriteFile(cfg, []byte(b.sekishoConfig(dir, addr, admin, m)), 0o644); err != nil {
				return nil, nil, err
			}
			cmd := exec.Command(b.sk.bin, "run", "--config", cfg)
			cmd.Dir = dir
			var pool *x509.CertPool
			if m == modeIntercept {
				pool = b.sk.caPool
			}
			return cmd, pool, nil
		},
	}
}

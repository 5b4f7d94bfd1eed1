package main

import (
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// squidDef is Debian's Squid (package squid-openssl for ssl_bump), started
// in the foreground (-N) with a generated configuration: no cache at all,
// the access log on, loopback clients, CONNECT to any port, and for
// interception ssl_bump with its own ECDSA CA and a bounded certificate
// cache (in memory and in the certificate generator's database).
func squidDef(bin string) *proxyDef {
	return &proxyDef{
		name:       targetSquid,
		intercepts: true,
		start: func(b *bench, dir, addr string, m mode) (*exec.Cmd, *x509.CertPool, error) {
			uid, gid, err := lookupUser("proxy")
			if err != nil {
				return nil, nil, err
			}
			var port strings.Builder
			fmt.Fprintf(&port, "http_port %s", addr)
			var bump string
			var pool *x509.CertPool
			if m == modeIntercept {
				ca, err := newCA("sekisho-bench Squid ssl_bump CA")
				if err != nil {
					return nil, nil, err
				}
				crt, key := filepath.Join(dir, "squid-ca.crt"), filepath.Join(dir, "squid-ca.key")
				upCA := filepath.Join(dir, "upstream-ca.pem")
				for f, data := range map[string][]byte{crt: ca.CertPEM, key: ca.KeyPEM, upCA: b.up.CA.CertPEM} {
					if err := os.WriteFile(f, data, 0o600); err != nil {
						return nil, nil, err
					}
				}
				db := filepath.Join(dir, "ssl_db")
				certgen := filepath.Join(filepath.Dir(bin), "..", "lib", "squid", "security_file_certgen")
				if _, err := os.Stat(certgen); err != nil {
					certgen = "/usr/lib/squid/security_file_certgen"
				}
				if _, err := runCmd(b.ctx, dir, nil, certgen, "-c", "-s", db, "-M", "64MB"); err != nil {
					return nil, nil, err
				}
				fmt.Fprintf(&port, " ssl-bump tls-cert=%s tls-key=%s generate-host-certificates=on dynamic_cert_mem_cache_size=64MB", crt, key)
				rules := "acl step1 at_step SslBump1\nssl_bump peek step1\nssl_bump bump all"
				if b.opt.squidBump == "client-first" {
					rules = "ssl_bump bump all"
				}
				bump = fmt.Sprintf("sslcrtd_program %s -s %s -M 64MB\n%s\ntls_outgoing_options cafile=%s\n",
					certgen, db, rules, upCA)
				pool = ca.Pool
			}
			conf := fmt.Sprintf(`# sekisho-bench: Squid without any cache, access log on.
%s
%s
pid_filename %s
cache_log %s
access_log stdio:%s
cache_store_log none
cache deny all
cache_mem 0 MB
digest_generation off
acl bench_clients src 127.0.0.0/8
http_access allow bench_clients
http_access deny all
hosts_file %s
dns_nameservers 127.0.0.1
visible_hostname sekisho-bench
pinger_enable off
netdb_filename none
max_filedescriptors %d
shutdown_lifetime 1 seconds
via off
forwarded_for transparent
cache_effective_user proxy
coredump_dir %s
`, port.String(), bump, filepath.Join(dir, "squid.pid"), filepath.Join(dir, "cache.log"),
				filepath.Join(dir, "access.log"), b.hosts.file, b.opt.proxyNofile, dir)
			cfg := filepath.Join(dir, "squid.conf")
			if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
				return nil, nil, err
			}
			if err := chownTree(dir, uid, gid); err != nil {
				return nil, nil, err
			}
			cmd := exec.Command(bin, "-N", "-f", cfg)
			cmd.Dir = dir
			return cmd, pool, nil
		},
	}
}

// lookupUser finds a system user's uid and primary gid.
func lookupUser(name string) (int, int, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return 0, 0, fmt.Errorf("user %q (needed to run the proxy unprivileged): %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid, nil
}

// groupName is a gid's name (the number when it has none).
func groupName(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return g.Name
	}
	return strconv.Itoa(gid)
}

// chownTree gives a proxy's directory to the user it drops privileges to.
func chownTree(dir string, uid, gid int) error {
	if os.Geteuid() != 0 {
		return nil
	}
	return filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// proxyVersion is the first line of `bin -v`.
func proxyVersion(bin string) string {
	out, err := exec.Command(bin, "-v").CombinedOutput()
	if err != nil && len(out) == 0 {
		return "unknown"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(line)
}

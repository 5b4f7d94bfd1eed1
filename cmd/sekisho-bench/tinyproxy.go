package main

import (
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// tinyproxyDef is Debian's tinyproxy in the foreground (-d): loopback
// clients, CONNECT to any port (no ConnectPort line), logging at Debian's
// default level (Info: one line per connection and request), and MaxClients
// raised so that it can hold the idle tunnels.
func tinyproxyDef(bin string) *proxyDef {
	return &proxyDef{
		name: targetTinyproxy,
		start: func(b *bench, dir, addr string, _ mode) (*exec.Cmd, *x509.CertPool, error) {
			uid, gid, err := lookupUser("nobody")
			if err != nil {
				return nil, nil, err
			}
			host, port, _ := strings.Cut(addr, ":")
			conf := fmt.Sprintf(`# sekisho-bench: tinyproxy, logs on.
User nobody
Group %s
Port %s
Listen %s
Timeout 600
MaxClients %d
Allow 127.0.0.0/8
LogFile "%s"
LogLevel Info
PidFile "%s"
DisableViaHeader Yes
`, groupName(gid), port, host, b.opt.idleTunnels+2000, filepath.Join(dir, "tinyproxy.log"), filepath.Join(dir, "tinyproxy.pid"))
			cfg := filepath.Join(dir, "tinyproxy.conf")
			if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
				return nil, nil, err
			}
			if err := chownTree(dir, uid, gid); err != nil {
				return nil, nil, err
			}
			cmd := exec.Command(bin, "-d", "-c", cfg)
			cmd.Dir = dir
			return cmd, nil, nil
		},
	}
}

package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/sekisho/sekisho/proxy/dial"
	"github.com/sekisho/sekisho/rules"
)

// hostsResolver answers names listed in a hosts(5)-format file and asks the
// system resolver for the rest: for names that exist only inside the
// building, a staging setup, or a benchmark on loopback.
type hostsResolver struct {
	hosts map[string][]netip.Addr
	next  dial.Resolver
}

// loadHostsFile reads "ADDRESS NAME..." lines ("#" starts a comment).
func loadHostsFile(path string, next dial.Resolver) (*hostsResolver, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("resolver.hosts_file: %w", err)
	}
	defer f.Close()
	r := &hostsResolver{hosts: map[string][]netip.Addr{}, next: next}
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		text, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(text)
		if len(fields) == 0 {
			continue
		}
		a, err := netip.ParseAddr(fields[0])
		if err != nil || len(fields) < 2 {
			return nil, fmt.Errorf("%s:%d: want an IP address and at least one name", path, line)
		}
		for _, name := range fields[1:] {
			n, err := rules.NormalizeHost(name)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %v", path, line, err)
			}
			r.hosts[n] = append(r.hosts[n], a.Unmap())
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("resolver.hosts_file: %w", err)
	}
	return r, nil
}

func (r *hostsResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if a, ok := r.hosts[host]; ok {
		return a, nil
	}
	if r.next == nil {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return r.next.LookupNetIP(ctx, network, host)
}

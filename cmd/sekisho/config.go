package main

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sekisho/sekisho/proxy/pages"
	"github.com/sekisho/sekisho/rules"
)

// config is the static configuration: what needs a restart to change
// (listeners, files, limits). The policy lives in the rules files it names,
// which reload live.
type config struct {
	Version      int            `yaml:"version"`
	Listen       stringList     `yaml:"listen"`
	AdminListen  string         `yaml:"admin_listen"`
	Admin        adminConfig    `yaml:"admin"`
	Rules        string         `yaml:"rules"`
	Geo          geoConfig      `yaml:"geo"`
	Log          logConfig      `yaml:"log"`
	Clients      clientConfig   `yaml:"clients"`
	Destinations destConfig     `yaml:"destinations"`
	Helpdesk     string         `yaml:"helpdesk"`
	Limits       limitsConfig   `yaml:"limits"`
	TLS          tlsConfig      `yaml:"tls"`
	Resolver     resolverConfig `yaml:"resolver"`
	PAC          pacConfig      `yaml:"pac"`

	path string   // where it was read from ("" = built-in defaults)
	sum  [32]byte // sha256 of the file
}

// liveFields are the parts of the configuration that a reload applies
// without a restart (yaml names); any other change waits for one.
var liveFields = map[string]bool{"pac": true, "helpdesk": true}

// pacConfig is the PAC file sekisho serves at /proxy.pac and /wpad.dat
// (see pages.PACConfig). It reloads without a restart.
type pacConfig struct {
	// Proxies are the addresses browsers use; default: the proxy
	// listeners, a wildcard one (0.0.0.0, ::) named by the machine's
	// host name when that is a fully qualified name, else its first
	// non-loopback address.
	Proxies              stringList    `yaml:"proxies"`
	DirectDomains        stringList    `yaml:"direct_domains"`
	DirectNetworks       prefixList    `yaml:"direct_networks"`
	PlainHostnamesDirect bool          `yaml:"plain_hostnames_direct"`
	FallbackDirect       bool          `yaml:"fallback_direct"`
	MaxAge               time.Duration `yaml:"max_age"`
}

// buildPAC generates the PAC file; listen are the proxy's bound
// addresses, for the default proxies.
func buildPAC(c pacConfig, listen []string) (*pages.PAC, error) {
	proxies := []string(c.Proxies)
	if len(proxies) == 0 {
		proxies = defaultPACProxies(listen, advertisedHost)
	}
	return pages.NewPAC(pages.PACConfig{
		Proxies:              proxies,
		DirectDomains:        c.DirectDomains,
		DirectNetworks:       c.DirectNetworks,
		PlainHostnamesDirect: c.PlainHostnamesDirect,
		FallbackDirect:       c.FallbackDirect,
		MaxAge:               c.MaxAge,
	})
}

// defaultPACProxies are the listen addresses as browsers can reach them: a
// wildcard address is replaced by host().
func defaultPACProxies(listen []string, host func() string) []string {
	var out []string
	for _, a := range listen {
		h, port, err := net.SplitHostPort(a)
		if err != nil {
			continue
		}
		if ip, err := netip.ParseAddr(h); h == "" || (err == nil && ip.IsUnspecified()) {
			h = host()
		}
		p := net.JoinHostPort(h, port)
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// advertisedHost names this machine for browsers: its host name when it is
// fully qualified (it has a dot), else its first non-loopback IPv4 (then
// IPv6) address, else the bare host name. Set pac.proxies in production: a
// DNS name lets the proxy move without touching the PCs.
func advertisedHost() string {
	name, _ := os.Hostname()
	if strings.Contains(strings.TrimSuffix(name, "."), ".") {
		return strings.TrimSuffix(name, ".")
	}
	var v6 string
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, ia := range addrs {
			p, err := netip.ParsePrefix(ia.String())
			if err != nil || !p.Addr().IsGlobalUnicast() {
				continue // loopback, link-local, multicast
			}
			if a := p.Addr().Unmap(); a.Is4() {
				return a.String()
			} else if v6 == "" {
				v6 = a.String()
			}
		}
	}
	if v6 != "" {
		return v6
	}
	if name != "" {
		return name
	}
	return "127.0.0.1"
}

// restartFields names the top-level fields (yaml names) that differ between
// two configurations and that only a restart applies.
func restartFields(running, next *config) []string {
	var out []string
	a, b := reflect.ValueOf(running).Elem(), reflect.ValueOf(next).Elem()
	for i := 0; i < a.NumField(); i++ {
		f := a.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "" || liveFields[name] {
			continue
		}
		if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
			out = append(out, name)
		}
	}
	return out
}

// resolverConfig adds static names in front of the system resolver.
type resolverConfig struct {
	HostsFile string `yaml:"hosts_file"`
}

// adminConfig tunes the admin listener.
type adminConfig struct {
	// Pprof mounts Go's profiler at /debug/pprof/ on the admin listener.
	Pprof bool `yaml:"pprof"`
}

// tlsConfig turns TLS interception on (ca_dir) and says which servers
// behind intercepted connections to trust.
type tlsConfig struct {
	CADir            string        `yaml:"ca_dir"`
	UpstreamRoots    stringList    `yaml:"upstream_roots"`
	LeafValidity     time.Duration `yaml:"leaf_validity"`
	CertificateCache int           `yaml:"certificate_cache"`
}

type geoConfig struct {
	Database         string     `yaml:"database"`
	InternalNetworks prefixList `yaml:"internal_networks"`
}

type logConfig struct {
	Audit  string `yaml:"audit"`  // stdout (default), stderr, off, or a file path
	Level  string `yaml:"level"`  // debug, info (default), warn, error
	Format string `yaml:"format"` // text (default) or json, for the operational log on stderr
}

type clientConfig struct {
	Allow prefixList `yaml:"allow"`
}

// destConfig adjusts which destinations are never dialed: deny adds to the
// built-in list (loopback, link-local, cloud metadata), allow carves
// exceptions out of it. sekisho's own listeners are always refused.
type destConfig struct {
	Deny  prefixList `yaml:"deny"`
	Allow prefixList `yaml:"allow"`
}

type limitsConfig struct {
	HoldBodyBytes         byteSize      `yaml:"hold_body_bytes"`
	ReadHeaderTimeout     time.Duration `yaml:"read_header_timeout"`
	IdleTimeout           time.Duration `yaml:"idle_timeout"`
	BodyIdleTimeout       time.Duration `yaml:"body_idle_timeout"`
	WriteIdleTimeout      time.Duration `yaml:"write_idle_timeout"`
	ResolveTimeout        time.Duration `yaml:"resolve_timeout"`
	DialTimeout           time.Duration `yaml:"dial_timeout"`
	ResponseHeaderTimeout time.Duration `yaml:"response_header_timeout"`
	MaxHeaderBytes        byteSize      `yaml:"max_header_bytes"`
	MaxConnections        int           `yaml:"max_connections"`
	MaxIdleConnsPerHost   int           `yaml:"max_idle_conns_per_host"`
	ShutdownTimeout       time.Duration `yaml:"shutdown_timeout"`
}

// stringList accepts one string or a list of strings.
type stringList []string

func (l *stringList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*l = stringList{n.Value}
		return nil
	}
	var s []string
	if err := n.Decode(&s); err != nil {
		return err
	}
	*l = s
	return nil
}

// prefixList accepts CIDRs and single addresses.
type prefixList []netip.Prefix

func (l *prefixList) UnmarshalYAML(n *yaml.Node) error {
	var raw stringList
	if err := raw.UnmarshalYAML(n); err != nil {
		return err
	}
	out := make(prefixList, 0, len(raw))
	for _, s := range raw {
		p, err := parsePrefix(s)
		if err != nil {
			return fmt.Errorf("line %d: %v", n.Line, err)
		}
		out = append(out, p)
	}
	*l = out
	return nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("%q is not a network in CIDR form (such as 10.0.0.0/8)", s)
		}
		if p.Masked() != p {
			return p, fmt.Errorf("%q has host bits set; did you mean %s?", s, p.Masked())
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or a CIDR network", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// byteSize accepts "64KiB", "1MiB", or a number of bytes.
type byteSize int64

func (b *byteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := rules.ParseSize(n.Value, false)
	if err != nil {
		return fmt.Errorf("line %d: %v", n.Line, err)
	}
	*b = byteSize(v)
	return nil
}

// defaultConfig is what `sekisho run` uses without --config: a proxy on
// loopback, admin on loopback, embedded database and rules.
func defaultConfig() *config {
	return &config{
		Version:     1,
		Listen:      stringList{"127.0.0.1:3128"},
		AdminListen: "127.0.0.1:9128",
		Log:         logConfig{Audit: "stdout", Level: "info", Format: "text"},
	}
}

var yamlLineRE = regexp.MustCompile(`line (\d+): `)

// loadConfig reads a config file strictly: unknown keys are errors, every
// error names file:line. Relative paths in it are relative to the file.
func loadConfig(path string) (*config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg := defaultConfig()
	cfg.Version = 0 // must be in the file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: the file is empty; a configuration starts with \"version: 1\" (see `sekisho run --help`)", path)
		}
		return nil, configError(path, err)
	}
	cfg.path = path
	cfg.sum = sha256.Sum256(data)
	if cfg.Version != 1 {
		return nil, fmt.Errorf("%s: \"version: 1\" is required (got %d)", path, cfg.Version)
	}
	base := filepath.Dir(path)
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(base, p)
	}
	cfg.Rules = abs(cfg.Rules)
	cfg.Geo.Database = abs(cfg.Geo.Database)
	cfg.TLS.CADir = abs(cfg.TLS.CADir)
	cfg.Resolver.HostsFile = abs(cfg.Resolver.HostsFile)
	for i, r := range cfg.TLS.UpstreamRoots {
		cfg.TLS.UpstreamRoots[i] = abs(r)
	}
	switch cfg.Log.Audit {
	case "", "stdout", "stderr", "off":
	default:
		cfg.Log.Audit = abs(cfg.Log.Audit)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

func configError(path string, err error) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		var lines []string
		for _, e := range te.Errors {
			lines = append(lines, path+":"+strings.TrimPrefix(yamlLineRE.ReplaceAllString(e, "$1: "), "yaml: "))
		}
		return errors.New(strings.Join(lines, "\n"))
	}
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if m := yamlLineRE.FindStringSubmatchIndex(msg); m != nil && m[0] == 0 {
		return fmt.Errorf("%s:%s: %s", path, msg[m[2]:m[3]], msg[m[1]:])
	}
	return fmt.Errorf("%s: %s", path, msg)
}

func (c *config) validate() error {
	var errs []string
	if len(c.Listen) == 0 {
		errs = append(errs, "listen: at least one address is needed")
	}
	for _, l := range c.Listen {
		if _, err := netip.ParseAddrPort(l); err != nil && !strings.HasPrefix(l, ":") {
			errs = append(errs, fmt.Sprintf("listen: %q is not an address:port such as 127.0.0.1:3128 or :3128", l))
		}
	}
	if c.AdminListen != "" {
		if _, err := netip.ParseAddrPort(c.AdminListen); err != nil && !strings.HasPrefix(c.AdminListen, ":") {
			errs = append(errs, fmt.Sprintf("admin_listen: %q is not an address:port such as 127.0.0.1:9128", c.AdminListen))
		}
	}
	switch c.Log.Level {
	case "", "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Sprintf("log.level: %q is not one of debug, info, warn, error", c.Log.Level))
	}
	switch c.Log.Format {
	case "", "text", "json":
	default:
		errs = append(errs, fmt.Sprintf("log.format: %q is not text or json", c.Log.Format))
	}
	if c.Limits.MaxConnections < 0 {
		errs = append(errs, "limits.max_connections must not be negative")
	}
	if c.Limits.HoldBodyBytes > 16<<20 {
		errs = append(errs, "limits.hold_body_bytes is at most 16MiB: every held request keeps that much in memory")
	}
	// The default proxies depend on the listeners; a stand-in checks the rest.
	if _, err := buildPAC(c.PAC, []string{"127.0.0.1:3128"}); err != nil {
		errs = append(errs, "pac."+err.Error())
	}
	if v := c.TLS.LeafValidity; v < 0 || v > 825*24*time.Hour {
		// Apple's clients reject a locally trusted leaf valid for longer.
		errs = append(errs, fmt.Sprintf("tls.leaf_validity: %s is not between 0 (the default, 7 days) and 825 days (19800h)", v))
	}
	if c.TLS.CertificateCache < 0 {
		errs = append(errs, "tls.certificate_cache must not be negative")
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// Command sekisho is the egress proxy that keeps a city hall's data at home:
// it geolocates the address each connection really goes to and blocks
// uploads to servers abroad, by rules that reload without a restart.
//
//	sekisho run [--config FILE]       run the proxy
//	sekisho check [--config FILE] [--rules PATH]
//	                                  validate configuration and rules, run the rules' tests
//	sekisho explain [flags] METHOD URL
//	                                  dry-run one request: service, address, country, rule, decision
//	sekisho ca init|export|show       the CA for TLS interception
//	sekisho healthcheck [--url URL]   exit 0 if a running sekisho's admin /healthz answers 200
//	sekisho report [flags] [FILE...]  usage report from audit logs: department × service × country
//	sekisho whatif --rules NEW LOG... replay logged requests through new rules; exit 1 if any change
//	sekisho version                   print the version
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `sekisho (関所) — an egress proxy that blocks uploads to servers abroad

Usage:
  sekisho run [--config FILE]            run the proxy (embedded defaults without --config)
  sekisho check [--config FILE] [--rules PATH]
                                         validate the configuration and rules and run the
                                         rules files' test cases; exit 1 on any error
  sekisho explain [flags] METHOD URL     dry-run one request: which service, which address
                                         would be dialed and where it is, which rule decides
  sekisho ca init|export|show             the CA for TLS interception (see "sekisho ca --help")
  sekisho healthcheck [--url URL]        exit 0 if a running sekisho's admin /healthz answers 200
  sekisho report [flags] [FILE... | -]   usage report from audit logs: department × service × country
  sekisho whatif --rules NEW LOG...      replay logged requests through new rules; exit 1 if any change
  sekisho version                        print the version

Run "sekisho COMMAND --help" for a command's flags.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "ca":
		return cmdCA(args[1:], stdout, stderr)
	case "explain":
		return cmdExplain(args[1:], stdout, stderr)
	case "healthcheck":
		return cmdHealthcheck(args[1:], stdout, stderr)
	case "report":
		return cmdReport(args[1:], stdout, stderr)
	case "whatif":
		return cmdWhatif(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, versionString())
		return 0
	case "help", "--help", "-help", "-h":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "sekisho: unknown command %q\n\n%s", args[0], usage)
	return 2
}

func versionString() string {
	rev := "unknown"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				rev = s.Value[:12]
			}
		}
	}
	return fmt.Sprintf("sekisho %s (revision %s, %s, %s/%s)", version, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

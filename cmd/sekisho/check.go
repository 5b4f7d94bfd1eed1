package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sekisho/sekisho/geo"
	"github.com/sekisho/sekisho/rules"
)

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration file to validate (and whose rules to check)")
	rulesPath := fs.String("rules", "", "rules file or directory to check (default: the one the config names, or the built-in rules)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: sekisho check [--config FILE] [--rules PATH]

Validates the configuration, opens the geo database it names, compiles the
rules and runs the test cases the rules files carry. Prints every error with
file:line and exits 1 if there is any; exits 0 and prints a summary if all
is well. Use it before deploying a change, or in CI for the rules repository.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sekisho check: unexpected argument %q (use --rules PATH)\n", fs.Arg(0))
		return 2
	}
	cfg := defaultConfig()
	if *configPath != "" {
		c, err := loadConfig(*configPath)
		if err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			return 1
		}
		cfg = c
		fmt.Fprintf(stdout, "config  %s: ok\n", *configPath)
	}
	if *rulesPath != "" {
		cfg.Rules = *rulesPath
	}
	failed := false
	if cfg.Geo.Database != "" {
		db, err := geo.Open(cfg.Geo.Database)
		if err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			failed = true
		} else {
			printGeo(stdout, db)
		}
	}
	src, err := rules.ReadSources(cfg.Rules)
	if err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		return 1
	}
	set, err := rules.Compile(src)
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(stderr, line)
		}
		fmt.Fprintf(stderr, "rules are NOT valid: a running sekisho would keep its previous rules\n")
		return 1
	}
	fmt.Fprintf(stdout, "rules   %s: %d rules, %d services, %d client groups; domestic %s%s\n",
		describeRules(cfg.Rules), len(set.Rules()), len(set.Catalog().Services()), len(set.ClientGroups()),
		strings.Join(set.Domestic(), ","), map[bool]string{true: "; REPORT-ONLY (blocks are not enforced)", false: ""}[set.ReportOnly()])
	fmt.Fprintf(stdout, "tests   %d passed\n", len(set.Tests()))
	for _, w := range set.Warnings() {
		fmt.Fprintf(stdout, "warning %s\n", w)
	}
	// What else `run` opens at start. What is here must be right (a CA key
	// readable by others, a broken hosts file fail the check); what is not
	// here may be mounted or created where sekisho runs (a Kubernetes
	// Secret, systemd's LogsDirectory), so its absence is a warning.
	notHere := func(what, path string) {
		fmt.Fprintf(stdout, "warning %s %s does not exist here: run fails unless it exists where sekisho runs\n", what, path)
	}
	if dir := cfg.TLS.CADir; dir != "" && !exists(dir) {
		notHere("tls.ca_dir", dir)
	} else if issuer, _, err := loadTLS(cfg.TLS, prometheus.NewRegistry()); err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		failed = true
	} else if issuer != nil {
		fmt.Fprintf(stdout, "tls     %s: CA loaded, valid until %s\n", dir, issuer.CA().Cert.NotAfter.Format(time.DateOnly))
		if w := caExpiryWarning(issuer, time.Now()); w != "" {
			fmt.Fprintf(stdout, "warning %s\n", w)
		}
	}
	if hf := cfg.Resolver.HostsFile; hf != "" {
		if !exists(hf) {
			notHere("resolver.hosts_file", hf)
		} else if _, err := loadHostsFile(hf, nil); err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			failed = true
		}
	}
	if err := checkAuditPath(cfg.Log.Audit); err != nil {
		fmt.Fprintf(stderr, "audit log: %v\n", err)
		failed = true
	} else if dir := filepath.Dir(cfg.Log.Audit); auditIsFile(cfg.Log.Audit) && !exists(dir) {
		notHere("the audit log's folder", dir)
	}
	if failed {
		return 1
	}
	fmt.Fprintln(stdout, "OK")
	return 0
}

func printGeo(w io.Writer, db *geo.Database) {
	info := db.Info()
	age := time.Since(info.BuildTime).Round(24 * time.Hour)
	fmt.Fprintf(w, "geo     %s: %s (schema %s), built %s (%d days ago)\n",
		info.Source, info.DatabaseType, info.Schema, info.BuildTime.Format(time.DateOnly), int(age.Hours()/24))
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, os.ErrNotExist)
}

func auditIsFile(path string) bool {
	switch path {
	case "", "stdout", "stderr", "off":
		return false
	}
	return true
}

// checkAuditPath reports an audit log path that run could not use on this
// machine: something other than a file in its place, or a folder sekisho
// cannot create it in. (Permissions are not judged: check may run as
// another user than the service.)
func checkAuditPath(path string) error {
	if !auditIsFile(path) {
		return nil
	}
	if st, err := os.Stat(path); err == nil && !st.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	}
	if st, err := os.Stat(filepath.Dir(path)); err == nil && !st.IsDir() {
		return fmt.Errorf("%s: %s is not a folder", path, filepath.Dir(path))
	}
	return nil
}

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
	// What else `run` opens at start: a check that passes must mean that
	// run starts.
	if issuer, _, err := loadTLS(cfg.TLS, prometheus.NewRegistry()); err != nil {
		fmt.Fprintf(stderr, "%v\n", err)
		failed = true
	} else if issuer != nil {
		fmt.Fprintf(stdout, "tls     %s: CA loaded\n", cfg.TLS.CADir)
	}
	if cfg.Resolver.HostsFile != "" {
		if _, err := loadHostsFile(cfg.Resolver.HostsFile, nil); err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			failed = true
		}
	}
	if err := checkAuditPath(cfg.Log.Audit); err != nil {
		fmt.Fprintf(stderr, "audit log: %v\n", err)
		failed = true
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

// checkAuditPath reports whether run could open the audit log file for
// appending, as this user (check may run as another user than the
// service).
func checkAuditPath(path string) error {
	switch path {
	case "", "stdout", "stderr", "off":
		return nil
	}
	if st, err := os.Stat(path); err == nil {
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s is not a regular file", path)
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			return err
		}
		return f.Close()
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	// Not there yet: run creates it. Try the folder with a file of our own.
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".sekisho-check-*")
	if err != nil {
		return fmt.Errorf("cannot create %s: %w", path, err)
	}
	_ = f.Close()
	return os.Remove(f.Name())
}

package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

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

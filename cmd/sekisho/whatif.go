package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/sekisho/sekisho/cmd/sekisho/internal/whatif"
	"github.com/sekisho/sekisho/rules"
)

func cmdWhatif(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("whatif", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rulesPath := fs.String("rules", "", "the new rules file or directory to try (required)")
	configPath := fs.String("config", "", "configuration in force: compare with its rules on the same facts (instead of with the decisions logged), and use its limits")
	since := fs.String("since", "", "replay lines from this time on (as for sekisho report)")
	until := fs.String("until", "", "replay lines before this time")
	format := fs.String("format", "text", "text or json")
	examples := fs.Int("examples", 3, "example requests shown per group")
	strict := fs.Bool("strict", false, "count requests decided with the same outcome by another rule as changes")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: sekisho whatif --rules NEW.yaml [flags] LOG... | -

Replays the requests in audit logs (plain or gzip; "-" is standard input)
through new rules before they are deployed, and reports what would change:
requests that would now be blocked (or cut at the upload budget), requests
that would now go through, and other changes, grouped by rule, service and
department (client group), with examples (file:line and request id).

Without --config, each request is compared with the decision logged for it.
With --config, with what the rules of that configuration decide on the same
facts: use that when the log spans earlier rule changes.

Exit status: 0 nothing would change; 1 something would change (a gate for
a deployment); 2 usage error, invalid rules, an unreadable input, or no
decided request in the logs to replay.

Examples:
  sekisho whatif --rules rules.new.yaml /var/log/sekisho/audit.jsonl*
  sekisho whatif --config /etc/sekisho/sekisho.yaml --rules rules.new.yaml --since 30d /var/log/sekisho/audit.jsonl*

Flags (before or after the logs):
`)
		fs.PrintDefaults()
	}
	files, err := parseInterleaved(fs, args)
	if err != nil {
		return exitUsage(err)
	}
	if *rulesPath == "" {
		fmt.Fprintln(stderr, "sekisho whatif: --rules NEW.yaml is required: the rules to try")
		return 2
	}
	if *format != "text" && *format != "json" {
		fmt.Fprintf(stderr, "sekisho whatif: --format %q: want text or json\n", *format)
		return 2
	}
	now := time.Now()
	opt := whatif.Options{Examples: *examples}
	if opt.Since, err = parseWhen(*since, now); err != nil {
		fmt.Fprintf(stderr, "sekisho whatif: --since: %v\n", err)
		return 2
	}
	if opt.Until, err = parseWhen(*until, now); err != nil {
		fmt.Fprintf(stderr, "sekisho whatif: --until: %v\n", err)
		return 2
	}
	if opt.Rules, err = rules.Load(*rulesPath); err != nil {
		fmt.Fprintf(stderr, "new rules are not valid:\n%v\n", err)
		return 2
	}
	if *configPath != "" {
		cfg, err := loadConfig(*configPath)
		if err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			return 2
		}
		if opt.Baseline, err = rules.Load(cfg.Rules); err != nil {
			fmt.Fprintf(stderr, "the rules of %s are not valid:\n%v\n", *configPath, err)
			return 2
		}
		opt.HoldBodyBytes = int64(cfg.Limits.HoldBodyBytes)
	}

	inputs, closeAll, err := openInputs(files)
	if err != nil {
		fmt.Fprintf(stderr, "sekisho whatif: %v\n", err)
		return 2
	}
	defer closeAll()
	p := whatif.New(opt)
	status := -1
	for _, in := range inputs {
		if err := p.Read(in.name, in.r); err != nil {
			fmt.Fprintf(stderr, "sekisho whatif: %v\n", err)
			status = 2
		}
	}
	r := p.Result()
	if *format == "json" {
		err = whatif.WriteJSON(stdout, r)
	} else {
		err = whatif.WriteText(stdout, r, *strict)
	}
	if err != nil {
		fmt.Fprintf(stderr, "sekisho whatif: %v\n", err)
		return 2
	}
	if r.Lines.Malformed > 0 {
		fmt.Fprintf(stderr, "sekisho whatif: %d malformed lines skipped\n", r.Lines.Malformed)
	}
	switch {
	case status >= 0:
		fmt.Fprintln(stderr, "sekisho whatif: an input could not be read to its end: the answer is incomplete")
		return status
	case r.Lines.Replayed == 0:
		fmt.Fprintf(stderr, "sekisho whatif: no decided request in %s: nothing to replay\n", strings.Join(files, ", "))
		return 2
	case r.Changed > 0 || (*strict && r.RuleOnlyCount > 0):
		return 1
	}
	return 0
}

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sekisho/sekisho/cmd/sekisho/internal/report"
	"github.com/sekisho/sekisho/rules"
)

// stdin is where "-" reads from (a variable for the tests).
var stdin io.Reader = os.Stdin

func cmdReport(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	since := fs.String("since", "", "count lines from this time on: 2026-06-01, 2026-06-01T09:00, RFC 3339, or a duration back from now (24h, 7d); without an offset, in the local time zone (TZ)")
	until := fs.String("until", "", "count lines before this time (exclusive; same forms as --since)")
	format := fs.String("format", "", "table (default), csv, json or html; default from --out's extension")
	out := fs.String("out", "", "write the report to this file instead of standard output")
	configPath := fs.String("config", "", "configuration file: its rules give department and service titles")
	rulesPath := fs.String("rules", "", "rules file or directory for the titles (overrides the config's; default: built-in)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: sekisho report [flags] [FILE... | -]

Reads audit logs (plain, or rotated and compressed with gzip: detected by
content, whatever the name; "-" or no FILE reads standard input) and reports
by department (client group) × service × country: requests, uploads sent
(count and bytes), blocked, would-block (report-only mode), over the upload
budget, and bytes received; per service, the countries its traffic went to
against its declared storage country. Malformed lines are counted and their
first line numbers shown; they never stop the report.

Exit status: 0 the report was written; 1 it was written but an input could
not be read to its end (a truncated gzip file); 2 usage error, or an input
cannot be opened.

Examples:
  sekisho report /var/log/sekisho/audit.jsonl*
  sekisho report --since 2026-06-01 --until 2026-07-01 --out june.html --config /etc/sekisho/sekisho.yaml /var/log/sekisho/audit.jsonl*
  zcat old.gz | sekisho report --format csv - > report.csv

Flags (before or after the files):
`)
		fs.PrintDefaults()
	}
	files, err := parseInterleaved(fs, args)
	if err != nil {
		return exitUsage(err)
	}
	now := time.Now()
	opt := report.Options{GeneratedAt: now}
	if opt.Since, err = parseWhen(*since, now); err != nil {
		fmt.Fprintf(stderr, "sekisho report: --since: %v\n", err)
		return 2
	}
	if opt.Until, err = parseWhen(*until, now); err != nil {
		fmt.Fprintf(stderr, "sekisho report: --until: %v\n", err)
		return 2
	}
	if !opt.Since.IsZero() && !opt.Until.IsZero() && !opt.Since.Before(opt.Until) {
		fmt.Fprintf(stderr, "sekisho report: --since %s is not before --until %s\n", *since, *until)
		return 2
	}
	if *format == "" {
		*format = "table"
		switch strings.ToLower(filepath.Ext(*out)) {
		case ".html", ".htm":
			*format = "html"
		case ".csv":
			*format = "csv"
		case ".json":
			*format = "json"
		}
	}
	if !validFormat(*format, report.Formats) {
		fmt.Fprintf(stderr, "sekisho report: --format %q: want one of %s\n", *format, strings.Join(report.Formats, ", "))
		return 2
	}
	set, code := titleRules(*configPath, *rulesPath, stderr)
	if set == nil {
		return code
	}
	opt.GroupTitles, opt.ServiceTitles = map[string]string{}, map[string]string{}
	for _, g := range set.ClientGroups() {
		opt.GroupTitles[g.Name] = g.Title
	}
	for _, s := range set.Catalog().Services() {
		opt.ServiceTitles[s.Name] = s.Title
	}

	inputs, closeAll, err := openInputs(files)
	if err != nil {
		fmt.Fprintf(stderr, "sekisho report: %v\n", err)
		return 2
	}
	defer closeAll()
	agg := report.New(opt)
	status := 0
	for _, in := range inputs {
		if err := agg.Read(in.name, in.r); err != nil {
			fmt.Fprintf(stderr, "sekisho report: %v (the lines before it are counted)\n", err)
			status = 1
		}
	}
	r := agg.Report()
	if r.Lines.Malformed > 0 {
		first := r.MalformedExamples[0]
		fmt.Fprintf(stderr, "sekisho report: %d malformed lines skipped (first: %s:%d: %s)\n", r.Lines.Malformed, first.File, first.Line, first.Error)
	}
	if err := writeOutput(*out, stdout, func(w io.Writer) error { return report.Write(w, r, *format) }); err != nil {
		fmt.Fprintf(stderr, "sekisho report: %v\n", err)
		return 2
	}
	return status
}

func validFormat(f string, formats []string) bool {
	for _, x := range formats {
		if f == x {
			return true
		}
	}
	return false
}

// titleRules loads the rules whose client groups and catalog give titles:
// --rules, else the config's, else the built-in ones.
func titleRules(configPath, rulesPath string, stderr io.Writer) (*rules.Set, int) {
	cfg := defaultConfig()
	if configPath != "" {
		c, err := loadConfig(configPath)
		if err != nil {
			fmt.Fprintf(stderr, "%v\n", err)
			return nil, 2
		}
		cfg = c
	}
	if rulesPath != "" {
		cfg.Rules = rulesPath
	}
	set, err := rules.Load(cfg.Rules)
	if err != nil {
		fmt.Fprintf(stderr, "rules are not valid:\n%v\n", err)
		return nil, 2
	}
	return set, 0
}

type namedInput struct {
	name string
	r    io.Reader
}

// openInputs opens every input before any is read, so that a typo in the
// last name fails at once rather than after an hour of reading. No names,
// or "-", is standard input (refused when it is a terminal: nothing would
// come).
func openInputs(names []string) ([]namedInput, func(), error) {
	if len(names) == 0 {
		if f, ok := stdin.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				return nil, func() {}, errors.New("no audit log given: name the files, or pipe one in with \"-\"")
			}
		}
		names = []string{"-"}
	}
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			_ = f.Close()
		}
	}
	var out []namedInput
	usedStdin := false
	for _, n := range names {
		if n == "-" {
			if usedStdin {
				closeAll()
				return nil, func() {}, errors.New(`"-" (standard input) given twice`)
			}
			usedStdin = true
			out = append(out, namedInput{name: "(stdin)", r: stdin})
			continue
		}
		f, err := os.Open(n)
		if err != nil {
			closeAll()
			return nil, func() {}, err
		}
		if st, err := f.Stat(); err == nil && st.IsDir() {
			f.Close()
			closeAll()
			return nil, func() {}, fmt.Errorf("%s is a directory: name the log files in it (audit.jsonl*)", n)
		}
		files = append(files, f)
		out = append(out, namedInput{name: n, r: f})
	}
	return out, closeAll, nil
}

// writeOutput writes to stdout, or to path through a temporary file that
// is renamed into place, so that a report read by someone else (or a
// cron job's mail) is never half written.
func writeOutput(path string, stdout io.Writer, write func(io.Writer) error) error {
	if path == "" || path == "-" {
		return write(stdout)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := write(tmp); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// parseWhen reads a --since/--until value: RFC 3339, a local date or date
// and time (in the machine's time zone, TZ), or a duration back from now
// ("36h", "7d").
func parseWhen(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02", "2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02 15:04:05"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	if strings.HasSuffix(s, "d") {
		if n, err := strconv.Atoi(strings.TrimSuffix(s, "d")); err == nil && n >= 0 {
			return now.AddDate(0, 0, -n), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is not a time: write 2026-06-01, 2026-06-01T09:00, 2026-06-01T09:00:00+09:00, or 24h / 7d back from now", s)
}

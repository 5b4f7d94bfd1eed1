package rules

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
)

// The metrics are read with Registry.Gather and written in the text format,
// as prometheus/testutil.GatherAndCompare does; testutil itself needs a
// module (github.com/kylelemons/godebug) that go.mod does not list.

// metricsText renders the named metric families of reg in the text format.
func metricsText(t *testing.T, reg *prometheus.Registry, names ...string) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if slices.Contains(names, mf.GetName()) {
			if err := enc.Encode(mf); err != nil {
				t.Fatal(err)
			}
		}
	}
	return b.String()
}

// metricValue returns the value of one series, and whether it exists.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels ...string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel())*2 != len(labels) {
				continue
			}
			for i, l := range m.GetLabel() {
				if l.GetName() != labels[2*i] || l.GetValue() != labels[2*i+1] {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

const (
	rulesV1 = `version: 1
rules:
  - name: block-foreign-uploads
    destinations: [foreign]
    upload: true
    action: block
`
	rulesV2 = `version: 1
report_only: true
rules:
  - name: block-foreign-uploads
    destinations: [foreign]
    upload: true
    action: block
  - name: log-dropbox
    services: [dropbox]
    action: log
`
	rulesBroken = `version: 1
rules:
  - name: block-foreign-uploads
    destinations: [abroad]
    action: block
`
)

func TestStoreReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	writeFile(t, path, rulesV1)
	initial, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	before := time.Now()
	s := NewStore(initial, reg)
	if s.Load() != initial {
		t.Fatal("Load() is not the initial set")
	}
	hash1 := initial.Hash()[:12]
	checkMetrics := func(step, want string) {
		t.Helper()
		got := metricsText(t, reg, "sekisho_rules_reloads_total", "sekisho_rules_last_reload_successful",
			"sekisho_rules_info", "sekisho_rules_report_only", "sekisho_rules_loaded")
		if got != want {
			t.Errorf("%s: metrics:\n%s\nwant:\n%s", step, got, want)
		}
	}
	metricsFor := func(success, failure int, ok int, hash string, reportOnly, rules int) string {
		return fmt.Sprintf(`# HELP sekisho_rules_info The rules in force: always 1, with the sha256 (first 12 hex digits) of their files as a label.
# TYPE sekisho_rules_info gauge
sekisho_rules_info{hash="%s"} 1
# HELP sekisho_rules_last_reload_successful 1 if the last rules reload succeeded (or none failed since start), 0 if the previous rules are still in force because of an error.
# TYPE sekisho_rules_last_reload_successful gauge
sekisho_rules_last_reload_successful %d
# HELP sekisho_rules_loaded Number of rules in the rule set in force.
# TYPE sekisho_rules_loaded gauge
sekisho_rules_loaded %d
# HELP sekisho_rules_reloads_total Rules reload attempts that found changed files, by result (success, failure).
# TYPE sekisho_rules_reloads_total counter
sekisho_rules_reloads_total{result="failure"} %d
sekisho_rules_reloads_total{result="success"} %d
# HELP sekisho_rules_report_only 1 when the rules in force are in report-only mode: blocks are logged, not enforced.
# TYPE sekisho_rules_report_only gauge
sekisho_rules_report_only %d
`, hash, ok, rules, failure, success, reportOnly)
	}
	checkMetrics("start", metricsFor(0, 0, 1, hash1, 0, 1))
	if ts, ok := metricValue(t, reg, "sekisho_rules_last_reload_success_timestamp_seconds"); !ok || ts < float64(before.Unix()) {
		t.Errorf("success timestamp %v", ts)
	}

	t.Run("same bytes", func(t *testing.T) {
		changed, err := s.Reload(path)
		if changed || err != nil {
			t.Errorf("Reload = %v, %v; want false, nil", changed, err)
		}
		if s.Load() != initial {
			t.Error("the set was replaced")
		}
		checkMetrics("same bytes", metricsFor(0, 0, 1, hash1, 0, 1))
	})

	var set2 *Set
	t.Run("replaced by rename", func(t *testing.T) {
		replaceFile(t, path, rulesV2)
		changed, err := s.Reload(path)
		if !changed || err != nil {
			t.Fatalf("Reload = %v, %v; want true, nil", changed, err)
		}
		set2 = s.Load()
		if set2 == initial || len(set2.Rules()) != 2 || !set2.ReportOnly() {
			t.Fatalf("new set not in force: %d rules", len(set2.Rules()))
		}
		// The old set is untouched: a request that loaded it keeps it.
		if len(initial.Rules()) != 1 || initial.ReportOnly() {
			t.Error("the old set changed")
		}
		checkMetrics("reloaded", metricsFor(1, 0, 1, set2.Hash()[:12], 1, 2))
		st := s.Status()
		if st.Hash != set2.Hash() || st.Rules != 2 || !st.ReportOnly || st.LastError != nil ||
			!slices.Equal(st.Sources, []string{path}) || !slices.Equal(st.Domestic, []string{"JP"}) ||
			st.Services != len(set2.Catalog().Services()) || st.Tests != 0 {
			t.Errorf("status %+v", st)
		}
	})

	t.Run("broken file keeps the old set", func(t *testing.T) {
		replaceFile(t, path, rulesBroken)
		changed, err := s.Reload(path)
		if !changed || err == nil {
			t.Fatalf("Reload = %v, %v; want true and an error", changed, err)
		}
		wantErr := path + `:4:20: rule "block-foreign-uploads": destination "abroad" is not one of domestic, foreign, unknown, internal`
		if err.Error() != wantErr {
			t.Errorf("error %q, want %q", err, wantErr)
		}
		var e *Error
		if !errors.As(err, &e) || e.Line != 4 {
			t.Errorf("errors.As: %+v", e)
		}
		if s.Load() != set2 {
			t.Error("a broken file replaced the set in force")
		}
		st := s.Status()
		if !slices.Equal(st.LastError, []string{wantErr}) || st.Hash != set2.Hash() {
			t.Errorf("status after failure: %+v", st)
		}
		if st.LastAttempt.Before(st.LoadedAt) {
			t.Errorf("last attempt %v before loaded at %v", st.LastAttempt, st.LoadedAt)
		}
		checkMetrics("failure", metricsFor(1, 1, 0, set2.Hash()[:12], 1, 2))

		// Still broken: counted again.
		if _, err := s.Reload(path); err == nil {
			t.Error("second reload of the broken file succeeded")
		}
		checkMetrics("failure again", metricsFor(1, 2, 0, set2.Hash()[:12], 1, 2))
	})

	t.Run("file restored to the rules in force", func(t *testing.T) {
		replaceFile(t, path, rulesV2)
		changed, err := s.Reload(path)
		if changed || err != nil {
			t.Errorf("Reload = %v, %v; want false, nil", changed, err)
		}
		if s.Load() != set2 {
			t.Error("the set was replaced")
		}
		if st := s.Status(); st.LastError != nil {
			t.Errorf("the error of a file that no longer exists is still shown: %q", st.LastError)
		}
		checkMetrics("restored", metricsFor(1, 2, 1, set2.Hash()[:12], 1, 2))
	})

	t.Run("missing file", func(t *testing.T) {
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		changed, err := s.Reload(path)
		if !changed || !errors.Is(err, os.ErrNotExist) {
			t.Errorf("Reload = %v, %v", changed, err)
		}
		if s.Load() != set2 {
			t.Error("a missing file replaced the set in force")
		}
		checkMetrics("missing", metricsFor(1, 3, 0, set2.Hash()[:12], 1, 2))
	})

	t.Run("back to the first rules", func(t *testing.T) {
		writeFile(t, path, rulesV1)
		changed, err := s.Reload(path)
		if !changed || err != nil {
			t.Fatalf("Reload = %v, %v", changed, err)
		}
		if s.Load().Hash() != initial.Hash() || s.Load() == initial {
			t.Error("want a new set with the first hash")
		}
		// The series of the replaced hash is deleted, not left at 1.
		checkMetrics("back", metricsFor(2, 3, 1, hash1, 0, 1))
	})
}

// TestStoreFailingTestCase: a file whose own test cases fail is rejected
// like a syntax error.
func TestStoreFailingTestCase(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	writeFile(t, path, rulesV1)
	set, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(set, nil) // no registry: metrics are kept but not exported
	replaceFile(t, path, rulesV1+`tests:
  - name: download from Korea
    request: GET https://example.kr/
    country: KR
    expect: block
`)
	_, err = s.Reload(path)
	want := path + `:8: test "download from Korea" failed: expected block, got allow (service other, effective country KR, destination foreign)`
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
	if s.Load() != set {
		t.Error("the set was replaced")
	}
}

// TestStoreConfigMap: a Kubernetes ConfigMap volume. The visible file is a
// symlink through "..data", itself a symlink to a timestamped folder; an
// update writes a new folder and renames a new "..data_tmp" symlink over
// "..data" in one step.
func TestStoreConfigMap(t *testing.T) {
	dir := t.TempDir()
	publish := func(stamp, rules string) {
		t.Helper()
		ts := "..2026_03_01_09_00_00." + stamp
		writeFile(t, filepath.Join(dir, ts, "rules.yaml"), rules)
		writeFile(t, filepath.Join(dir, ts, "departments.yaml"), "version: 1\nclient_groups:\n  - name: welfare\n    networks: [10.20.0.0/16]\n")
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(ts, tmp); err != nil {
			t.Skip(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	publish("000000001", rulesV1)
	for _, name := range []string{"rules.yaml", "departments.yaml"} {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}

	src, err := ReadSources(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range src {
		names = append(names, filepath.Base(s.Name))
	}
	if !slices.Equal(names, []string{"departments.yaml", "rules.yaml"}) {
		t.Fatalf("sources %q: the ..data entries must be skipped", names)
	}
	set, err := Compile(src)
	if err != nil {
		t.Fatal(err)
	}
	s := NewStore(set, prometheus.NewRegistry())

	if changed, err := s.Reload(dir); changed || err != nil {
		t.Errorf("unchanged ConfigMap: Reload = %v, %v", changed, err)
	}

	publish("000000002", rulesV2)
	if err := os.RemoveAll(filepath.Join(dir, "..2026_03_01_09_00_00.000000001")); err != nil {
		t.Fatal(err)
	}
	changed, err := s.Reload(dir)
	if !changed || err != nil {
		t.Fatalf("Reload = %v, %v", changed, err)
	}
	got := s.Load()
	if len(got.Rules()) != 2 || got.Rules()[1].Name != "log-dropbox" || len(got.ClientGroups()) != 1 {
		t.Errorf("new rules not in force: %d rules", len(got.Rules()))
	}
	if !slices.Equal(got.Sources(), []string{filepath.Join(dir, "departments.yaml"), filepath.Join(dir, "rules.yaml")}) {
		t.Errorf("sources %q: the names are the visible symlinks", got.Sources())
	}
}

// TestStoreConcurrent: requests load the set while reloads swap it. Each
// request decides with the one snapshot it loaded, whatever happens in
// between. Run with -race.
func TestStoreConcurrent(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	// Without the built-in catalog a compile is quick, so that the
	// reloads are many against the readers on a small machine.
	block := "version: 1\nbuiltin_catalog: false\nrules:\n  - name: block\n    destinations: [foreign]\n    action: block\n"
	allow := "version: 1\nbuiltin_catalog: false\nrules:\n  - name: allow\n    destinations: [foreign]\n    action: allow\n"
	writeFile(t, path, block)
	set, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s := NewStore(set, reg)

	var stop atomic.Bool
	var decisions atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				rs := s.Load()
				f := Facts{Host: "example.com", Port: 443, Method: "GET", Country: "KR"}
				rs.Prepare(&f)
				d := rs.Decide(&f)
				if want := rs.Rules()[0].Action; d.Action != want || d.Rule != rs.Rules()[0] {
					t.Errorf("decision %s by %s from a set whose rule is %s", d.Action, d.RuleName(), want)
					return
				}
				decisions.Add(1)
				runtime.Gosched()
			}
		})
	}
	wg.Go(func() {
		for !stop.Load() {
			_ = s.Status()
			_, _ = reg.Gather()
			runtime.Gosched()
		}
	})
	const reloads = 40
	for i := range reloads {
		text := allow
		if i%2 == 1 {
			text = block
		}
		replaceFile(t, path, text)
		if changed, err := s.Reload(path); !changed || err != nil {
			t.Errorf("reload %d: %v, %v", i, changed, err)
		}
	}
	// And a burst of reloads at once, as from fsnotify, SIGHUP and the
	// admin endpoint together: they are serialised.
	var rwg sync.WaitGroup
	for range 8 {
		rwg.Go(func() {
			if _, err := s.Reload(path); err != nil {
				t.Error(err)
			}
		})
	}
	rwg.Wait()
	stop.Store(true)
	wg.Wait()
	if decisions.Load() == 0 {
		t.Error("no decision was made")
	}
	if v, _ := metricValue(t, reg, "sekisho_rules_reloads_total", "result", "success"); v != reloads {
		t.Errorf("%v successful reloads counted, want %d", v, reloads)
	}
}

func TestStoreMetricsHaveHelp(t *testing.T) {
	reg := prometheus.NewRegistry()
	NewStore(builtinSet(t), reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 6 {
		t.Errorf("%d metric families", len(mfs))
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "sekisho_rules_") || mf.GetHelp() == "" {
			t.Errorf("metric %s: help %q", mf.GetName(), mf.GetHelp())
		}
	}
	// A second store on the same registry is a programming error.
	defer func() {
		if recover() == nil {
			t.Error("registering twice did not panic")
		}
	}()
	NewStore(builtinSet(t), reg)
}

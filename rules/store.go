package rules

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ReadSources reads the rules at path: one file, or every *.yaml / *.yml
// file directly in a directory, in name order. Names starting with "." are
// skipped: editors' swap files, and the "..data" machinery of a Kubernetes
// ConfigMap volume (whose visible files are symlinks into it, followed
// here). An empty path means the embedded default rules.
func ReadSources(path string) ([]Source, error) {
	if path == "" {
		return DefaultSources(), nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	if !st.IsDir() {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("rules: %w", err)
		}
		return []Source{{Name: path, Data: data}}, nil
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	var out []Source
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !IsRulesFileName(name) {
			continue
		}
		full := filepath.Join(path, name)
		fi, err := os.Stat(full) // follows the symlinks of a ConfigMap volume
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // a dangling symlink mid-swap; the next event reloads
			}
			return nil, fmt.Errorf("rules: %w", err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(full)
		if err != nil {
			return nil, fmt.Errorf("rules: %w", err)
		}
		out = append(out, Source{Name: full, Data: data})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if len(out) == 0 {
		return nil, fmt.Errorf("rules: no *.yaml or *.yml files in directory %s", path)
	}
	return out, nil
}

// IsRulesFileName reports whether a file in a rules directory is read: a
// name ending in .yaml or .yml, in any case.
func IsRulesFileName(name string) bool {
	lower := strings.ToLower(name)
	return strings.HasSuffix(lower, ".yaml") || strings.HasSuffix(lower, ".yml")
}

// Load reads and compiles the rules at path (see ReadSources), running the
// files' test cases.
func Load(path string) (*Set, error) {
	src, err := ReadSources(path)
	if err != nil {
		return nil, err
	}
	return Compile(src)
}

func hashSources(src []Source) string {
	h := sha256.New()
	for _, s := range src {
		h.Write([]byte(s.Name))
		h.Write([]byte{0})
		h.Write(s.Data)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Store holds the rule set in force and swaps in a new one on reload. A
// reload that fails — unreadable, unparsable, invalid, or with failing test
// cases — leaves the previous set in force; the failure is counted, logged by
// the caller, and visible in Status.
type Store struct {
	cur atomic.Pointer[Set]

	mu          sync.Mutex // serialises reloads and guards the status fields
	lastErr     error
	lastAttempt time.Time
	lastSuccess time.Time

	reloads        *prometheus.CounterVec
	lastOK         prometheus.Gauge
	lastSuccessTS  prometheus.Gauge
	info           *prometheus.GaugeVec
	reportOnly     prometheus.Gauge
	rulesCount     prometheus.Gauge
	infoHash       string
	reloadsOK      prometheus.Counter
	reloadsFailure prometheus.Counter
}

// NewStore starts a store with an initial set (which must not be nil; a
// broken rules file at start-up is a start-up error). Metrics are
// registered on reg when it is not nil.
func NewStore(initial *Set, reg prometheus.Registerer) *Store {
	s := &Store{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sekisho_rules_reloads_total",
			Help: "Rules reload attempts that found changed files, by result (success, failure).",
		}, []string{"result"}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sekisho_rules_last_reload_successful",
			Help: "1 if the last rules reload succeeded (or none failed since start), 0 if the previous rules are still in force because of an error.",
		}),
		lastSuccessTS: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sekisho_rules_last_reload_success_timestamp_seconds",
			Help: "Unix time when the rules in force were loaded.",
		}),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sekisho_rules_info",
			Help: "The rules in force: always 1, with the sha256 (first 12 hex digits) of their files as a label.",
		}, []string{"hash"}),
		reportOnly: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sekisho_rules_report_only",
			Help: "1 when the rules in force are in report-only mode: blocks are logged, not enforced.",
		}),
		rulesCount: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sekisho_rules_loaded",
			Help: "Number of rules in the rule set in force.",
		}),
	}
	s.reloadsOK = s.reloads.WithLabelValues("success")
	s.reloadsFailure = s.reloads.WithLabelValues("failure")
	if reg != nil {
		reg.MustRegister(s.reloads, s.lastOK, s.lastSuccessTS, s.info, s.reportOnly, s.rulesCount)
	}
	s.lastOK.Set(1)
	s.swap(initial, time.Now())
	return s
}

// Load returns the set in force. Callers load it once per request and keep
// using that snapshot.
func (s *Store) Load() *Set { return s.cur.Load() }

func (s *Store) swap(set *Set, now time.Time) {
	s.cur.Store(set)
	s.lastSuccess = now
	s.lastSuccessTS.Set(float64(now.UnixNano()) / 1e9)
	short := set.hash
	if len(short) > 12 {
		short = short[:12]
	}
	if s.infoHash != "" && s.infoHash != short {
		s.info.DeleteLabelValues(s.infoHash)
	}
	s.infoHash = short
	s.info.WithLabelValues(short).Set(1)
	if set.reportOnly {
		s.reportOnly.Set(1)
	} else {
		s.reportOnly.Set(0)
	}
	s.rulesCount.Set(float64(len(set.rules)))
}

// Reload reads and compiles the rules at path and swaps them in. When the
// files are byte-for-byte the set in force, nothing happens and changed is
// false: editors and Kubernetes produce bursts of events for one change.
func (s *Store) Reload(path string) (changed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	s.lastAttempt = now
	src, err := ReadSources(path)
	if err == nil && hashSources(src) == s.cur.Load().hash {
		if s.lastErr != nil {
			// The files are back to the set in force: the failure is over.
			s.lastErr = nil
			s.lastOK.Set(1)
		}
		return false, nil
	}
	var set *Set
	if err == nil {
		set, err = Compile(src)
	}
	if err != nil {
		s.lastErr = err
		s.reloadsFailure.Inc()
		s.lastOK.Set(0)
		return true, err
	}
	s.lastErr = nil
	s.reloadsOK.Inc()
	s.lastOK.Set(1)
	s.swap(set, now)
	return true, nil
}

// Status is what the admin listener shows about the rules.
type Status struct {
	Hash        string    `json:"hash"`
	Sources     []string  `json:"sources"`
	Rules       int       `json:"rules"`
	Services    int       `json:"services"`
	Tests       int       `json:"tests"`
	ReportOnly  bool      `json:"report_only"`
	Domestic    []string  `json:"domestic"`
	LoadedAt    time.Time `json:"loaded_at"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	LastError   []string  `json:"last_error,omitempty"`
	Warnings    []string  `json:"warnings,omitempty"`
}

// Status reports the set in force and the last reload error, if the last
// reload failed.
func (s *Store) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	set := s.cur.Load()
	st := Status{
		Hash:        set.hash,
		Sources:     set.sources,
		Rules:       len(set.rules),
		Services:    len(set.catalog.services),
		Tests:       len(set.tests),
		ReportOnly:  set.reportOnly,
		Domestic:    set.Domestic(),
		LoadedAt:    s.lastSuccess,
		LastAttempt: s.lastAttempt,
		Warnings:    set.warnings,
	}
	if s.lastErr != nil {
		st.LastError = strings.Split(s.lastErr.Error(), "\n")
	}
	return st
}

// SameSources reports whether the sources are exactly those of the set;
// used by callers that read files themselves.
func (s *Set) SameSources(src []Source) bool {
	return bytes.Equal([]byte(hashSources(src)), []byte(s.hash))
}

package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sekisho/sekisho/geo"
	"github.com/sekisho/sekisho/rules"
)

// debounce is how long the reload loop waits after the last file event
// before reloading: editors write a file in several steps, and a
// Kubernetes ConfigMap swap is a burst of creates, renames and removes.
const debounce = 250 * time.Millisecond

// reloader is the one loop that reloads: file events (fsnotify on the
// parent folders, debounced), SIGHUP and POST /-/reload all end up in run,
// one at a time, so two reloads never race.
type reloader struct {
	rulesPath string // file or directory; "" = embedded defaults (nothing to watch)
	geoPath   string // "" = embedded database
	rules     *rules.Store
	geo       *geo.Store
	config    *configFile // nil without --config
	log       *slog.Logger
	watcher   *fsnotify.Watcher
	requests  chan chan error
	onHUP     func() // also run on SIGHUP (reopen the audit log)

	mu      sync.Mutex
	geoErr  string
	cfgErr  string
	closing sync.Once
}

// configFile is sekisho.yaml as the reload loop sees it. A reload reads
// it strictly (like at start), applies the parts that change live (the
// PAC file and the helpdesk), and names every other changed field as
// needing a restart. A file that does not load keeps the previous PAC
// and helpdesk, like a broken rules file keeps the previous rules.
type configFile struct {
	path    string
	running *config  // as started: what a restart would change is compared with it
	sum     [32]byte // sha256 of the file in force
	// apply swaps in the live parts of cfg; an error changes nothing.
	apply func(cfg *config) error

	reloads       *prometheus.CounterVec
	lastOK        prometheus.Gauge
	lastSuccessTS prometheus.Gauge
}

func newConfigFile(running *config, apply func(*config) error, reg prometheus.Registerer) *configFile {
	c := &configFile{
		path:    running.path,
		running: running,
		sum:     running.sum,
		apply:   apply,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sekisho_config_reloads_total",
			Help: "Reload attempts of sekisho.yaml that found it changed, by result (success, failure).",
		}, []string{"result"}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sekisho_config_last_reload_successful",
			Help: "1 if the last reload of sekisho.yaml succeeded (or none failed since start), 0 if the previous PAC file and helpdesk are still in force because of an error.",
		}),
		lastSuccessTS: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sekisho_config_last_reload_success_timestamp_seconds",
			Help: "Unix time when the sekisho.yaml in force was loaded.",
		}),
	}
	c.reloads.WithLabelValues("success")
	c.reloads.WithLabelValues("failure")
	c.lastOK.Set(1)
	c.lastSuccessTS.SetToCurrentTime()
	if reg != nil {
		reg.MustRegister(c.reloads, c.lastOK, c.lastSuccessTS)
	}
	return c
}

func newReloader(rulesPath, geoPath string, rs *rules.Store, gs *geo.Store, log *slog.Logger) *reloader {
	return &reloader{
		rulesPath: rulesPath,
		geoPath:   geoPath,
		rules:     rs,
		geo:       gs,
		log:       log,
		requests:  make(chan chan error),
	}
}

// watch starts watching the folders that hold the rules and the database.
// Folders, not files: an editor that saves by rename, geoipupdate that
// replaces its file, and Kubernetes that swaps a "..data" symlink all
// replace the file's inode, and a watch on the old inode sees nothing more.
func (r *reloader) watch() error {
	dirs := map[string]bool{}
	if r.rulesPath != "" {
		if st, err := os.Stat(r.rulesPath); err == nil && st.IsDir() {
			// The directory for edits of its files, and its parent for the
			// directory itself being replaced (mv, a release symlink):
			// then the new one is watched instead (rewatchRulesDir).
			dirs[r.rulesPath] = true
		}
		dirs[filepath.Dir(r.rulesPath)] = true
	}
	if r.geoPath != "" {
		dirs[filepath.Dir(r.geoPath)] = true
	}
	if r.config != nil {
		dirs[filepath.Dir(r.config.path)] = true
	}
	if len(dirs) == 0 {
		return nil
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return err
	}
	for d := range dirs {
		if err := w.Add(d); err != nil {
			_ = w.Close()
			return fmt.Errorf("watch %s: %w", d, err)
		}
	}
	r.watcher = w
	return nil
}

func (r *reloader) close() {
	r.closing.Do(func() {
		if r.watcher != nil {
			_ = r.watcher.Close()
		}
	})
}

// request asks the loop for a reload and waits for its result (the admin
// endpoint).
func (r *reloader) request(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case r.requests <- reply:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// rewatchRulesDir watches the rules directory again after an event on its
// name: a watch follows an inode, and a directory replaced by rename (or a
// symlink pointed elsewhere) is a new one. Adding the same directory again
// is harmless.
func (r *reloader) rewatchRulesDir(ev fsnotify.Event) {
	if r.watcher == nil || r.rulesPath == "" || absPath(ev.Name) != absPath(r.rulesPath) {
		return
	}
	if st, err := os.Stat(r.rulesPath); err != nil || !st.IsDir() {
		return // gone for now: its reappearance is another event on its name
	}
	if err := r.watcher.Add(r.rulesPath); err != nil {
		r.log.Warn("cannot watch the replaced rules directory; SIGHUP or POST /-/reload still reload", "path", r.rulesPath, "error", err)
	}
}

// absPath is p absolute and clean, for comparing paths: fsnotify names
// the files of a folder watched as "." by their absolute paths.
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return filepath.Clean(p)
}

// concerns reports which reloads a file event may affect. Paths are
// compared absolute (a relative --config is relative to the working
// directory, which sekisho never changes).
func (r *reloader) concerns(ev fsnotify.Event) (rulesChanged, geoChanged, configChanged bool) {
	name := absPath(ev.Name)
	base := filepath.Base(name)
	dir := filepath.Dir(name)
	if strings.HasPrefix(base, "..") {
		// Kubernetes' ConfigMap machinery: "..data" and its timestamped
		// targets change when the volume's content is swapped.
		return r.rulesPath != "", r.geoPath != "", r.config != nil
	}
	if r.config != nil && name == absPath(r.config.path) {
		configChanged = true
	}
	if r.rulesPath != "" {
		if rp := absPath(r.rulesPath); dir == rp {
			rulesChanged = rules.IsRulesFileName(base)
		} else if name == rp {
			rulesChanged = true
		}
	}
	if r.geoPath != "" && name == absPath(r.geoPath) {
		geoChanged = true
	}
	return rulesChanged, geoChanged, configChanged
}

// run is the loop. hup may be nil.
func (r *reloader) run(ctx context.Context, hup <-chan os.Signal) {
	var events <-chan fsnotify.Event
	var errs <-chan error
	if r.watcher != nil {
		events, errs = r.watcher.Events, r.watcher.Errors
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var pendingRules, pendingGeo, pendingConfig bool
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			r.rewatchRulesDir(ev)
			rc, gc, cc := r.concerns(ev)
			if rc || gc || cc {
				pendingRules = pendingRules || rc
				pendingGeo = pendingGeo || gc
				pendingConfig = pendingConfig || cc
				timer.Reset(debounce)
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			r.log.Warn("file watch error; SIGHUP or POST /-/reload still reload", "error", err)
		case <-timer.C:
			_ = r.reload("file change", pendingRules, pendingGeo, pendingConfig)
			pendingRules, pendingGeo, pendingConfig = false, false, false
		case <-hup:
			if r.onHUP != nil {
				r.onHUP()
			}
			_ = r.reload("SIGHUP", true, true, true)
		case reply := <-r.requests:
			reply <- r.reload("POST /-/reload", true, true, true)
		}
	}
}

// reload reloads what is asked; unchanged files are skipped by hash. Errors
// are logged and returned; the previous configuration, rules or database
// stay in force.
func (r *reloader) reload(trigger string, doRules, doGeo, doConfig bool) error {
	var errs []error
	if doConfig && r.config != nil {
		if err := r.reloadConfig(trigger); err != nil {
			errs = append(errs, err)
		}
	}
	if doRules && r.rulesPath != "" {
		before := len(r.rules.Load().Rules())
		changed, err := r.rules.Reload(r.rulesPath)
		switch {
		case err != nil:
			r.log.Error("rules reload failed; the previous rules stay in force",
				"trigger", trigger, "path", r.rulesPath, "error", err.Error())
			errs = append(errs, fmt.Errorf("rules: %w", err))
		case changed:
			set := r.rules.Load()
			r.log.Info("rules reloaded", "trigger", trigger, "path", r.rulesPath,
				"hash", shortHash(set.Hash()), "rules", len(set.Rules()), "tests", len(set.Tests()))
			for _, w := range set.Warnings() {
				r.log.Warn("rules", "warning", w)
			}
			if len(set.Rules()) == 0 && before > 0 {
				// Valid, but maybe a file cut short or a key renamed away:
				// only the default action decides now.
				r.log.Warn("rules reloaded with no rules at all; only the default action decides now",
					"path", r.rulesPath, "rules_before", before)
			}
		default:
			r.log.Debug("rules unchanged", "trigger", trigger)
		}
	}
	if doGeo && r.geoPath != "" {
		changed, err := r.geo.ReloadFile(r.geoPath)
		r.mu.Lock()
		if err != nil {
			r.geoErr = err.Error()
		} else {
			r.geoErr = ""
		}
		r.mu.Unlock()
		switch {
		case err != nil:
			r.log.Error("geo database reload failed; the previous database stays in force",
				"trigger", trigger, "path", r.geoPath, "error", err.Error())
			errs = append(errs, fmt.Errorf("geo database: %w", err))
		case changed:
			info := r.geo.Database().Info()
			r.log.Info("geo database reloaded", "trigger", trigger, "path", r.geoPath,
				"type", info.DatabaseType, "built", info.BuildTime.Format(time.DateOnly))
		}
	}
	return errors.Join(errs...)
}

// reloadConfig reloads sekisho.yaml: the PAC file and the helpdesk change
// at once; other changed fields are logged as needing a restart.
func (r *reloader) reloadConfig(trigger string) error {
	c := r.config
	data, err := os.ReadFile(c.path)
	if err == nil && sha256.Sum256(data) == c.sum {
		r.mu.Lock()
		wasBroken := r.cfgErr != ""
		r.cfgErr = ""
		r.mu.Unlock()
		if wasBroken {
			// The file is back to the one in force: the failure is over.
			c.lastOK.Set(1)
			r.log.Info("configuration file is back to the one in force", "trigger", trigger, "path", c.path)
		}
		return nil
	}
	var cfg *config
	if err == nil {
		cfg, err = loadConfig(c.path)
	}
	if err == nil {
		err = c.apply(cfg)
	}
	if err != nil {
		r.mu.Lock()
		r.cfgErr = err.Error()
		r.mu.Unlock()
		c.reloads.WithLabelValues("failure").Inc()
		c.lastOK.Set(0)
		r.log.Error("configuration reload failed; the previous PAC file and helpdesk stay in force",
			"trigger", trigger, "path", c.path, "error", err.Error())
		return fmt.Errorf("configuration: %w", err)
	}
	c.sum = cfg.sum
	r.mu.Lock()
	r.cfgErr = ""
	r.mu.Unlock()
	c.reloads.WithLabelValues("success").Inc()
	c.lastOK.Set(1)
	c.lastSuccessTS.SetToCurrentTime()
	r.log.Info("configuration reloaded: PAC file and helpdesk applied", "trigger", trigger, "path", c.path)
	if fields := restartFields(c.running, cfg); len(fields) > 0 {
		r.log.Warn("restart needed: these configuration changes take effect only when sekisho restarts",
			"trigger", trigger, "path", c.path, "fields", strings.Join(fields, ", "))
	}
	return nil
}

func (r *reloader) lastConfigError() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfgErr
}

func (r *reloader) lastGeoError() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.geoErr
}

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

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
	log       *slog.Logger
	watcher   *fsnotify.Watcher
	requests  chan chan error
	onHUP     func() // also run on SIGHUP (reopen the audit log)

	mu      sync.Mutex
	geoErr  string
	closing sync.Once
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
			dirs[r.rulesPath] = true
		} else {
			dirs[filepath.Dir(r.rulesPath)] = true
		}
	}
	if r.geoPath != "" {
		dirs[filepath.Dir(r.geoPath)] = true
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

// concerns reports which reloads a file event may affect.
func (r *reloader) concerns(ev fsnotify.Event) (rulesChanged, geoChanged bool) {
	base := filepath.Base(ev.Name)
	dir := filepath.Dir(ev.Name)
	if strings.HasPrefix(base, "..") {
		// Kubernetes' ConfigMap machinery: "..data" and its timestamped
		// targets change when the volume's content is swapped.
		return r.rulesPath != "", r.geoPath != ""
	}
	if r.rulesPath != "" {
		if dir == filepath.Clean(r.rulesPath) {
			rulesChanged = rules.IsRulesFileName(base)
		} else if ev.Name == filepath.Clean(r.rulesPath) {
			rulesChanged = true
		}
	}
	if r.geoPath != "" && ev.Name == filepath.Clean(r.geoPath) {
		geoChanged = true
	}
	return rulesChanged, geoChanged
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
	var pendingRules, pendingGeo bool
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			rc, gc := r.concerns(ev)
			if rc || gc {
				pendingRules = pendingRules || rc
				pendingGeo = pendingGeo || gc
				timer.Reset(debounce)
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			r.log.Warn("file watch error; SIGHUP or POST /-/reload still reload", "error", err)
		case <-timer.C:
			_ = r.reload("file change", pendingRules, pendingGeo)
			pendingRules, pendingGeo = false, false
		case <-hup:
			if r.onHUP != nil {
				r.onHUP()
			}
			_ = r.reload("SIGHUP", true, true)
		case reply := <-r.requests:
			reply <- r.reload("POST /-/reload", true, true)
		}
	}
}

// reload reloads what is asked; unchanged files are skipped by hash. Errors
// are logged and returned; the previous rules or database stay in force.
func (r *reloader) reload(trigger string, doRules, doGeo bool) error {
	var errs []error
	if doRules && r.rulesPath != "" {
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

func (r *reloader) lastGeoError() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.geoErr
}

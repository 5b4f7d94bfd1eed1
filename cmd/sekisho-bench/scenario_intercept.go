package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
)

// intercept is scenario 4, with the proxy intercepting *.bench.example
// (direct: the same handshakes with the upstream itself):
//
//   - cold: every connection CONNECTs to a name never used before
//     (hN.bench.example:port), so the proxy must sign a new certificate and
//     open a new upstream connection; handshake, one GET, close;
//   - warm: the same with one name (cached certificate, pooled upstream);
//   - kept-alive: clients GET over intercepted keep-alive connections.
func (b *bench) intercept(t *target) ([]measurement, error) {
	_, port, _ := net.SplitHostPort(b.up.TLS)
	hostport := func(name string) string { return net.JoinHostPort(name, port) }
	pool := t.caPool(b.up)
	base := &tls.Config{RootCAs: pool, NextProtos: []string{"http/1.1"}, CurvePreferences: b.opt.curves()}
	handshake := func(name string) error {
		cfg := base.Clone()
		cfg.ServerName = name
		return b.tlsOnce(t, hostport(name), hostport(name), cfg)
	}
	var out []measurement

	// Cold: a pool of fresh names, each used once.
	var names []string
	if t.direct() {
		// Direct needs no resolvable names (and is the fastest): plenty.
		names = make([]string, 4*b.opt.coldNames)
		for i := range names {
			names[i] = fmt.Sprintf("direct%d.%s", i, benchDomain)
		}
	} else {
		names = b.hosts.take(b.opt.coldNames)
	}
	if err := b.up.prepareSites(append([]string{warmName, keepName}, names...)); err != nil {
		return out, err
	}
	defer b.up.forgetSites(names)
	// Warm the process up on the warm name (not recorded).
	warmCfg := base.Clone()
	warmCfg.ServerName = warmName
	runLoad(b.ctx, b.opt.workers, 0, b.opt.warmup, 0, func(int) (func() error, func()) {
		return func() error { return b.tlsOnce(t, hostport(warmName), hostport(warmName), warmCfg) }, nil
	})

	var next atomic.Int64
	cold := runLoad(b.ctx, b.opt.workers, 0, b.opt.duration, t.pid(), func(int) (func() error, func()) {
		return func() error {
			i := next.Add(1) - 1
			if i >= int64(len(names)) {
				return errStop
			}
			return handshake(names[i])
		}, nil
	})
	if next.Load() >= int64(len(names)) {
		b.notef("intercepted cold, %s: all %d fresh names were used before the %s window ended; the rate is over %.1fs",
			t.name, len(names), b.opt.duration, cold.window.Seconds())
	}
	out = append(out, measurement{mICold, cold.rate()})
	if !t.direct() && cold.ops > 0 {
		out = append(out, measurement{mIColdCPU, cold.cpu / float64(cold.ops) * 1e3})
	}
	b.noteErrors("intercepted cold", t, cold)

	// Warm: one name.
	warm := runLoad(b.ctx, b.opt.workers, 0, b.opt.duration, t.pid(), func(int) (func() error, func()) {
		return func() error { return b.tlsOnce(t, hostport(warmName), hostport(warmName), warmCfg) }, nil
	})
	out = append(out, measurement{mIWarm, warm.rate()})
	if !t.direct() && warm.ops > 0 {
		out = append(out, measurement{mIWarmCPU, warm.cpu / float64(warm.ops) * 1e3})
	}
	b.noteErrors("intercepted warm", t, warm)

	// Kept-alive requests.
	url := "https://" + hostport(keepName) + "/small"
	keep := runLoad(b.ctx, b.opt.clients, b.opt.warmup, b.opt.duration, t.pid(), func(int) (func() error, func()) {
		tr := t.transport(&tls.Config{RootCAs: pool, CurvePreferences: b.opt.curves()})
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		return func() error { return getSmall(tr, req) }, tr.CloseIdleConnections
	})
	out = append(out,
		measurement{mIRPS, keep.rate()},
		measurement{mIP99, ms(percentile(keep.lat, 0.99))},
		measurement{mIErr, float64(cold.errs + warm.errs + keep.errs)},
	)
	b.noteErrors("intercepted kept-alive", t, keep)
	return out, nil
}

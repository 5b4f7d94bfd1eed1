package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHealthcheck(t *testing.T) {
	e := boot(t, "", "")
	admin := "http://" + e.inst.AdminAddr

	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer slow.Close()
	unready := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("not ready: shutting down\n"))
	}))
	defer unready.Close()
	redirect := httptest.NewServer(http.RedirectHandler(admin+"/healthz", http.StatusFound))
	defer redirect.Close()
	// An address where nothing listens: a listener opened, then closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/healthz"
	_ = ln.Close()

	for _, tc := range []struct {
		name       string
		args       []string
		code       int
		out, inErr string
	}{
		{"healthy", []string{"--url", admin + "/healthz"}, 0, "healthy: ok", ""},
		{"ready", []string{"--url", admin + "/readyz"}, 0, "healthy: ready", ""},
		{"not ready", []string{"--url", unready.URL + "/readyz"}, 1, "", "UNHEALTHY: HTTP 503 Service Unavailable: not ready: shutting down"},
		{"not found", []string{"--url", admin + "/nothing"}, 1, "", "UNHEALTHY: HTTP 404"},
		{"redirect is not followed", []string{"--url", redirect.URL}, 1, "", "UNHEALTHY: HTTP 302"},
		{"nothing listens", []string{"--url", closed}, 1, "", "connection refused: nothing listens there"},
		{"hangs", []string{"--url", slow.URL, "--timeout", "200ms"}, 1, "", "no answer within 200ms"},
		{"not a URL", []string{"--url", "127.0.0.1:9128/healthz"}, 2, "", "is not an http:// or https:// URL"},
		{"bad timeout", []string{"--timeout", "0s"}, 2, "", "--timeout must be positive"},
		{"stray argument", []string{"now"}, 2, "", `unexpected argument "now"`},
		{"help", []string{"--help"}, 0, "", "Usage: sekisho healthcheck"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			start := time.Now()
			code := run(append([]string{"healthcheck"}, tc.args...), &out, &errb)
			if code != tc.code || !strings.Contains(out.String(), tc.out) || !strings.Contains(errb.String(), tc.inErr) {
				t.Errorf("exit %d (want %d)\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errb.String())
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %s", d)
			}
		})
	}
}

func TestHealthcheckInUsage(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "sekisho healthcheck") {
		t.Errorf("usage does not list healthcheck:\n%s", out.String())
	}
}

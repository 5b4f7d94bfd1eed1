package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
	"time"
)

// defaultHealthURL is where `sekisho healthcheck` looks without --url: the
// liveness endpoint of the default admin listener. The container image's
// configuration (deploy/docker/sekisho.yaml) listens on 0.0.0.0:9128, which
// this reaches from inside the container.
const defaultHealthURL = "http://127.0.0.1:9128/healthz"

// cmdHealthcheck is `sekisho healthcheck`: one GET to the admin listener,
// exit 0 if it answers 200, 1 if not. It exists because the container image
// has no shell and no curl; Docker's HEALTHCHECK and other probes run it.
func cmdHealthcheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rawURL := fs.String("url", defaultHealthURL, "admin endpoint to query (/healthz for liveness, /readyz for readiness)")
	timeout := fs.Duration("timeout", 2*time.Second, "give up after this long")
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: sekisho healthcheck [--url URL] [--timeout 2s]

Asks a running sekisho's admin listener whether it is healthy: exit 0 if
the URL answers 200 within the timeout, exit 1 (with the reason) if not.
The container image's HEALTHCHECK runs it; it needs no shell or curl.
If admin_listen is not on port 9128 of this host, pass --url.

Flags:
`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "sekisho healthcheck: unexpected argument %q (use --url URL)\n", fs.Arg(0))
		return 2
	}
	u, err := url.Parse(*rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(stderr, "sekisho healthcheck: --url %q is not an http:// or https:// URL such as %s\n", *rawURL, defaultHealthURL)
		return 2
	}
	if *timeout <= 0 {
		fmt.Fprintf(stderr, "sekisho healthcheck: --timeout must be positive\n")
		return 2
	}
	status, body, err := healthGet(u.String(), *timeout)
	switch {
	case err != nil:
		fmt.Fprintf(stderr, "sekisho healthcheck: %s: UNHEALTHY: %s\n", u, err)
		return 1
	case status != http.StatusOK:
		fmt.Fprintf(stderr, "sekisho healthcheck: %s: UNHEALTHY: HTTP %d %s%s\n", u, status, http.StatusText(status), body)
		return 1
	}
	fmt.Fprintf(stdout, "sekisho healthcheck: %s: healthy%s\n", u, body)
	return 0
}

// healthGet does one GET without a proxy (a health check must never go
// through HTTP_PROXY, which a proxy's own environment may well set) and
// without following redirects. body is the first line of the answer,
// prefixed with ": ", or "".
func healthGet(target string, timeout time.Duration) (status int, body string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	client := &http.Client{
		Transport: &http.Transport{
			Proxy:             nil, // never HTTP_PROXY
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("User-Agent", "sekisho-healthcheck/"+version)
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", explainHealthError(err, timeout)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	if line != "" {
		line = ": " + line
	}
	return resp.StatusCode, line, nil
}

// explainHealthError turns a client error into what an admin should check.
func explainHealthError(err error, timeout time.Duration) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err):
		return fmt.Errorf("no answer within %s (sekisho overloaded or hung?)", timeout)
	case errors.Is(err, syscall.ECONNREFUSED):
		return errors.New("connection refused: nothing listens there (is sekisho running, and is admin_listen this address?)")
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return fmt.Errorf("cannot resolve %q", dnsErr.Name)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

package report

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestHTMLSelfContained: the report loads nothing from anywhere (its CSP
// forbids it, and it has no references to try), and log values are
// escaped: a host or service name in a log is data, not markup.
func TestHTMLSelfContained(t *testing.T) {
	r, _ := genReport(t)
	r.Services = append(r.Services, Service{Service: `<script>alert(1)</script>`, SentAbroadBytes: 1, Counts: Counts{UploadBytes: 1}})
	r.Rows = append(r.Rows, Row{Group: `"><img src=x onerror=alert(1)>`, Service: "x", Country: "KR", Destination: "foreign"})
	var buf bytes.Buffer
	if err := WriteHTML(&buf, r); err != nil {
		t.Fatal(err)
	}
	page := buf.String()
	if !strings.Contains(page, `content="default-src 'none'; style-src 'unsafe-inline'; img-src data:"`) {
		t.Error("no Content-Security-Policy that forbids loading anything")
	}
	for _, bad := range []string{"<script", `src="`, `href="`, "@import", "url(", "<img", "<link", "<iframe", "https://"} {
		if strings.Contains(page, bad) {
			t.Errorf("the page contains %q", bad)
		}
	}
	for _, want := range []string{"@page", "size: A4", "@media print", "海外への送信量（サービス別）", "Data sent abroad, by service",
		"Data sent abroad, by country", "Blocked uploads over time", "福祉課", "&lt;script&gt;alert(1)&lt;/script&gt;"} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
	if n := strings.Count(page, "<svg"); n != 3 {
		t.Errorf("%d SVG charts, want 3", n)
	}
}

func findChromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("SEKISHO_REQUIRE_TOOLS") == "1" {
		t.Fatal("chromium is not installed (apt-get install chromium) and SEKISHO_REQUIRE_TOOLS=1")
	}
	t.Skip("chromium is not installed (apt-get install chromium); SEKISHO_REQUIRE_TOOLS=1 makes this a failure")
	return ""
}

// artifacts is where the screenshot and the files around it are kept:
// $SEKISHO_ARTIFACTS for CI to upload, or a temporary folder.
func artifacts(t *testing.T) string {
	if d := os.Getenv("SEKISHO_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		abs, err := filepath.Abs(d)
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	return t.TempDir()
}

// consoleLine is how Chromium logs a page's console messages (any level,
// uncaught exceptions, CSP violations, failed loads) with
// --enable-logging=stderr: "[...:INFO:CONSOLE:1] "message", source: ...",
// or "CONSOLE(1)" in older versions.
var consoleLine = regexp.MustCompile(`CONSOLE[:(]`)

// chromium opens a file headless and returns the console messages.
func chromium(t *testing.T, bin, page string, extra ...string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--enable-logging=stderr", "--v=0",
		"--window-size=1240,1754",
	}, extra...)
	args = append(args, "file://"+page)
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", extra, err, stderr.String())
	}
	var console []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if consoleLine.MatchString(l) {
			console = append(console, l)
		}
	}
	return console
}

// TestHTMLInChromium renders the report in headless Chromium: no console
// message of any kind (there are no scripts, so any message is an error: a
// blocked load, a CSP violation), a screenshot of the first A4 page at 150
// dpi and a PDF kept as artifacts.
func TestHTMLInChromium(t *testing.T) {
	bin := findChromium(t)
	dir := artifacts(t)

	// The detector must see a console error on this Chromium, or its
	// silence below would mean nothing.
	bad := filepath.Join(t.TempDir(), "bad.html")
	os.WriteFile(bad, []byte(`<!DOCTYPE html><html><body><script>console.error("sekisho-canary")</script><img src="https://example.invalid/x.png"></body></html>`), 0o644)
	if got := chromium(t, bin, bad, "--dump-dom"); len(got) == 0 || !strings.Contains(strings.Join(got, "\n"), "sekisho-canary") {
		t.Fatalf("the console detector sees nothing on a page that logs an error: %q", got)
	}

	r, _ := genReport(t)
	r.GeneratedAt = time.Date(2026, 6, 8, 9, 0, 0, 0, time.FixedZone("", 9*3600))
	var buf bytes.Buffer
	if err := WriteHTML(&buf, r); err != nil {
		t.Fatal(err)
	}
	page := filepath.Join(dir, "report.html")
	if err := os.WriteFile(page, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(dir, "report.png")
	if console := chromium(t, bin, page, "--screenshot="+shot, "--hide-scrollbars"); len(console) > 0 {
		t.Errorf("console messages:\n%s", strings.Join(console, "\n"))
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1240 || b.Dy() != 1754 {
		t.Errorf("screenshot is %v, want 1240×1754", b)
	}
	// Not a blank page: the charts and tables cover a good part of it.
	var ink int
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			if r, g, bl, _ := img.At(x, y).RGBA(); r+g+bl < 3*0xe000 {
				ink++
			}
		}
	}
	if frac := float64(ink) / float64(b.Dx()*b.Dy()/4); frac < 0.02 {
		t.Errorf("the screenshot is almost blank (%.1f%% ink)", 100*frac)
	}

	pdf := filepath.Join(dir, "report.pdf")
	if console := chromium(t, bin, page, "--print-to-pdf="+pdf, "--no-pdf-header-footer"); len(console) > 0 {
		t.Errorf("console messages while printing:\n%s", strings.Join(console, "\n"))
	}
	data, err := os.ReadFile(pdf)
	if err != nil || !bytes.HasPrefix(data, []byte("%PDF")) {
		t.Fatalf("no PDF printed: %v", err)
	}
	// A4 is 595.28 × 841.89 points; Chromium writes it as 594.96 × 841.92.
	boxes := regexp.MustCompile(`/MediaBox\s*\[\s*0 0 ([0-9.]+) ([0-9.]+)\s*\]`).FindAllSubmatch(data, -1)
	if len(boxes) == 0 {
		t.Fatal("the PDF has no pages")
	}
	for _, m := range boxes {
		var w, h float64
		fmt.Sscan(string(m[1]), &w)
		fmt.Sscan(string(m[2]), &h)
		if w < 594 || w > 596 || h < 841 || h > 843 {
			t.Errorf("a PDF page is %.2f × %.2f points, not A4 (595 × 842)", w, h)
		}
	}
	t.Logf("artifacts: %s, %s, %s", page, shot, pdf)
}

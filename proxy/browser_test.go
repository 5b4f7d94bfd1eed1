package proxy_test

import (
	"bytes"
	"context"
	"image/png"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/proxy/proxytest"
)

// The browser tests drive a real headless Chromium from the command line:
// it is pointed at sekisho by --proxy-pac-url (the PAC file sekisho serves),
// trusts sekisho's CA through a fresh NSS database, and runs pages whose own
// script does what a person would (the upload form attaches a file and
// submits). --dump-dom and --screenshot give the page as it ends, and
// --enable-logging=stderr its console.

func findTool(t *testing.T, pkg string, names ...string) string {
	t.Helper()
	for _, name := range names {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("SEKISHO_REQUIRE_TOOLS") == "1" {
		t.Fatalf("%s is not installed (apt-get install %s) and SEKISHO_REQUIRE_TOOLS=1", names[0], pkg)
	}
	t.Skipf("%s is not installed (apt-get install %s); SEKISHO_REQUIRE_TOOLS=1 makes this a failure", names[0], pkg)
	return ""
}

// artifacts is where screenshots are kept: $SEKISHO_ARTIFACTS for CI to
// upload, or a temporary folder.
func artifacts(t *testing.T) string {
	t.Helper()
	d := os.Getenv("SEKISHO_ARTIFACTS")
	if d == "" {
		return t.TempDir()
	}
	abs, err := filepath.Abs(d)
	if err == nil {
		err = os.MkdirAll(abs, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// browserHome is a HOME for Chromium whose NSS database ($HOME/.pki/nssdb,
// where Chromium on Linux looks) trusts caPEM as a root — what rolling the
// CA out does to a PC. A nil caPEM leaves the database empty.
func browserHome(t *testing.T, caPEM []byte) string {
	t.Helper()
	certutil := findTool(t, "libnss3-tools", "certutil")
	home := t.TempDir()
	db := filepath.Join(home, ".pki", "nssdb")
	if err := os.MkdirAll(db, 0o700); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(certutil, args...).CombinedOutput(); err != nil {
			t.Fatalf("certutil %v: %v\n%s", args, err, out)
		}
	}
	run("-d", "sql:"+db, "-N", "--empty-password")
	if caPEM != nil {
		ca := filepath.Join(home, "sekisho-ca.pem")
		if err := os.WriteFile(ca, caPEM, 0o644); err != nil {
			t.Fatal(err)
		}
		run("-d", "sql:"+db, "-A", "-t", "C,,", "-n", "sekisho", "-i", ca)
	}
	return home
}

// consoleLine is how Chromium logs a page's console messages (any level,
// uncaught exceptions, CSP violations, failed loads) with
// --enable-logging=stderr.
var consoleLine = regexp.MustCompile(`CONSOLE[:(]`)

type browser struct {
	bin  string
	home string
	pac  string // PAC URL; "" = no proxy at all
}

// open loads url headless until the page is idle (virtual time), and
// returns the final DOM and the console messages. With shot, it also
// writes a screenshot there.
func (b browser) open(t *testing.T, url, shot string, extra ...string) (string, []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := []string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--enable-logging=stderr", "--v=0",
		"--window-size=1240,1600", "--hide-scrollbars", "--virtual-time-budget=20000",
		"--dump-dom",
	}
	if b.pac != "" {
		args = append(args, "--proxy-pac-url="+b.pac)
	} else {
		// No proxy: and no name reaches a real DNS server either.
		args = append(args, "--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1")
	}
	if shot != "" {
		args = append(args, "--screenshot="+shot)
	}
	args = append(append(args, extra...), url)
	cmd := exec.CommandContext(ctx, b.bin, args...)
	cmd.Env = append(os.Environ(), "HOME="+b.home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", url, err, stderr.String())
	}
	var console []string
	for _, l := range strings.Split(stderr.String(), "\n") {
		if consoleLine.MatchString(l) {
			console = append(console, l)
		}
	}
	return stdout.String(), console
}

func newBrowser(t *testing.T, h *proxytest.Harness, trustCA bool) browser {
	t.Helper()
	bin := findTool(t, "chromium", "chromium", "chromium-browser", "google-chrome")
	var ca []byte
	if trustCA {
		ca = h.CA.PEM()
	}
	return browser{bin: bin, home: browserHome(t, ca), pac: "http://" + h.Addr + "/proxy.pac"}
}

// assertScreenshot checks that a screenshot is a PNG with something on it.
func assertScreenshot(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot %s: %v", path, err)
	}
	var ink, n int
	bounds := img.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y += 3 {
		for x := bounds.Min.X; x < bounds.Max.X; x += 3 {
			n++
			if r, g, b, _ := img.At(x, y).RGBA(); r+g+b < 3*0xc000 {
				ink++
			}
		}
	}
	if float64(ink)/float64(n) < 0.01 {
		t.Errorf("screenshot %s is almost blank", path)
	}
}

const browserRules = `version: 1
inspection:
  default: true
rules:
  - name: block-foreign-uploads
    destinations: [foreign]
    upload: true
    action: block
    message: 住民の個人情報を国外のサーバーに送信することはできません。
    alternative: 庁内ファイル共有 \\fileserver\share
`

// TestBrowserUploadThroughPAC is the whole path in a real browser: PAC →
// sekisho → TLS interception with a CA the browser trusts → the upload
// form of a domestic and of a foreign site. The domestic upload arrives
// byte-exact; the foreign one gets the block page, and the foreign server
// not one byte of the file.
func TestBrowserUploadThroughPAC(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Intercept: true, Rules: browserRules})
	b := newBrowser(t, h, true)
	dir := artifacts(t)

	// Domestic: the file arrives as it was.
	dom, console := b.open(t, h.TLSURL("jp.example", "/form?auto=1"), "")
	if !strings.Contains(dom, "JP POST /upload ") {
		t.Fatalf("domestic upload: the page is not the upstream's answer:\n%.2000s", dom)
	}
	if len(console) > 0 {
		t.Errorf("console messages on the domestic upload:\n%s", strings.Join(console, "\n"))
	}
	file, name := uploadedFile(t, h.JP)
	if name != "residents.bin" || !bytes.Equal(file, proxytest.UploadFile()) {
		t.Errorf("the domestic upstream received %q, %d bytes; want residents.bin, the %d bytes attached, byte-exact", name, len(file), len(proxytest.UploadFile()))
	}

	// Foreign: the block page, in the browser, over the site's own HTTPS.
	shot := filepath.Join(dir, "block-page.png")
	dom, console = b.open(t, h.TLSURL("kr.example", "/form?auto=1"), shot)
	for _, want := range []string{
		"この送信はブロックされました", "This upload was blocked",
		"住民の個人情報を国外のサーバーに送信することはできません。",
		"<code>kr.example</code>", "KR 韓国 / South Korea", "<code>block-foreign-uploads</code>",
		`庁内ファイル共有 \\fileserver\share`, "情報政策課 (内線 1234)",
		"送信しようとしたデータは、送信先には届いていません。",
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the browser's block page lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("the page:\n%.3000s\nsekisho's log:\n%s", dom, h.Audit())
	}
	if id := regexp.MustCompile(`Request ID</span>: <code>([0-9a-f]{8}-[0-9a-f]{8})</code>`).FindStringSubmatch(dom); id == nil || !strings.Contains(h.Audit(), `"id":"`+id[1]+`"`) {
		t.Errorf("the block page's request id is not in the audit log: %v", id)
	}
	if len(console) > 0 {
		t.Errorf("console messages on the foreign upload and its block page:\n%s", strings.Join(console, "\n"))
	}
	assertScreenshot(t, shot)
	t.Logf("block page screenshot: %s", shot)
	for _, r := range h.KR.Requests() {
		if r.Method != http.MethodGet {
			t.Errorf("the foreign upstream received a %s %s", r.Method, r.URL.Path)
		}
	}
	for _, body := range h.KR.Bodies() {
		if len(body) > 0 {
			t.Errorf("the foreign upstream received a body of %d bytes", len(body))
		}
	}
	if strings.Count(h.Audit(), `"host":"kr.example"`) == 0 || !strings.Contains(h.Audit(), `"method":"POST","scheme":"https","host":"kr.example"`) {
		t.Error("the blocked upload is not in the audit log")
	}
}

// uploadedFile finds the last multipart upload an upstream received and
// returns its file part.
func uploadedFile(t *testing.T, u *proxytest.Upstream) ([]byte, string) {
	t.Helper()
	reqs, bodies := u.Requests(), u.Bodies()
	for i := len(reqs) - 1; i >= 0; i-- {
		if reqs[i].Method != http.MethodPost {
			continue
		}
		_, params, err := mime.ParseMediaType(reqs[i].Header.Get("Content-Type"))
		if err != nil {
			t.Fatalf("upload Content-Type: %v", err)
		}
		mr := multipart.NewReader(bytes.NewReader(bodies[i]), params["boundary"])
		for {
			p, err := mr.NextPart()
			if err != nil {
				t.Fatalf("no file part in the upload: %v", err)
			}
			if p.FileName() != "" {
				b, err := io.ReadAll(p)
				if err != nil {
					t.Fatal(err)
				}
				return b, p.FileName()
			}
		}
	}
	t.Fatalf("%s upstream received no upload", u.Name)
	return nil, ""
}

var checkState = regexp.MustCompile(`id="(check-[a-z]+)" data-state="([a-z]+)"`)

func selftestStates(t *testing.T, dom string) map[string]string {
	t.Helper()
	if !strings.Contains(dom, `data-done="true"`) {
		t.Fatalf("the self-test did not finish:\n%s", dom)
	}
	states := map[string]string{}
	for _, m := range checkState.FindAllStringSubmatch(dom, -1) {
		states[m[1]] = m[2]
	}
	return states
}

// TestBrowserOnboardAndSelftest opens sekisho's own pages in the browser:
// the start page and the self-test render without a console message, and
// the self-test tells a configured browser from one without the PAC or
// without the CA — without any self-test name reaching DNS or a server.
func TestBrowserOnboardAndSelftest(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Intercept: true})
	b := newBrowser(t, h, true)
	dir := artifacts(t)

	// The detector must see a console error on this Chromium, or its
	// silence below would mean nothing.
	if _, console := b.open(t, `data:text/html,<script>console.error("sekisho-canary")</script>`, ""); !strings.Contains(strings.Join(console, "\n"), "sekisho-canary") {
		t.Fatalf("the console detector sees nothing on a page that logs an error: %q", console)
	}

	shot := filepath.Join(dir, "onboarding-page.png")
	dom, console := b.open(t, "http://"+h.Addr+"/", shot)
	if !strings.Contains(dom, h.CA.Fingerprint()) || !strings.Contains(dom, "sekisho（関所）の設定方法") {
		t.Errorf("the start page in the browser:\n%.2000s", dom)
	}
	if len(console) > 0 {
		t.Errorf("console messages on the start page:\n%s", strings.Join(console, "\n"))
	}
	assertScreenshot(t, shot)

	// Set up: all three checks pass.
	shot = filepath.Join(dir, "selftest-page.png")
	dom, console = b.open(t, "http://"+h.Addr+"/selftest", shot)
	want := map[string]string{"check-pac": "ok", "check-ca": "ok", "check-upload": "ok"}
	if got := selftestStates(t, dom); !equalMaps(got, want) {
		t.Errorf("self-test in a configured browser: %v, want %v", got, want)
	}
	if !strings.Contains(dom, "すべて正常です / All checks passed") {
		t.Error("no summary that all checks passed")
	}
	if len(console) > 0 {
		t.Errorf("console messages on the self-test page:\n%s", strings.Join(console, "\n"))
	}
	assertScreenshot(t, shot)

	// The CA not trusted: HTTPS fails, so the CA and upload checks do.
	untrusted := newBrowser(t, h, false)
	dom, _ = untrusted.open(t, "http://"+h.Addr+"/selftest", filepath.Join(dir, "selftest-no-ca.png"))
	want = map[string]string{"check-pac": "ok", "check-ca": "fail", "check-upload": "error"}
	if got := selftestStates(t, dom); !equalMaps(got, want) {
		t.Errorf("self-test without the CA: %v, want %v", got, want)
	}

	// No PAC: the browser goes direct, and nothing answers.
	direct := b
	direct.pac = ""
	dom, _ = direct.open(t, "http://"+h.Addr+"/selftest", filepath.Join(dir, "selftest-no-pac.png"))
	want = map[string]string{"check-pac": "fail", "check-ca": "fail", "check-upload": "error"}
	if got := selftestStates(t, dom); !equalMaps(got, want) {
		t.Errorf("self-test without the PAC: %v, want %v", got, want)
	}

	for _, name := range h.Lookups() {
		if strings.HasSuffix(name, ".selftest.sekisho.invalid") {
			t.Errorf("a self-test name reached the resolver: %s", name)
		}
	}
	for _, u := range []*proxytest.Upstream{h.JP, h.KR, h.CN, h.US, h.Unknown, h.JP6} {
		if u.Conns() != 0 {
			t.Errorf("the %s site was dialed %d times", u.Name, u.Conns())
		}
	}
	if !strings.Contains(h.Audit(), `"host":"upload-check.selftest.sekisho.invalid"`) {
		t.Error("the self-test's upload is not in the audit log")
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

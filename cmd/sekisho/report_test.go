package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sekisho/sekisho/cmd/sekisho/internal/report"
	"github.com/sekisho/sekisho/cmd/sekisho/internal/whatif"
	"github.com/sekisho/sekisho/proxy/proxytest"
)

// whatifFixture is the whatif package's fixture: a log that old.yaml
// decided, and new.yaml that changes 36 of its 61 decided requests.
var whatifFixture = filepath.Join("internal", "whatif", "testdata")

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func gzipFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(data)
	zw.Close()
	if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReportCommand(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(whatifFixture, "audit.jsonl")
	rotated := filepath.Join(dir, "audit.jsonl.1.gz")
	gzipFile(t, plain, rotated)
	rulesFile := filepath.Join(whatifFixture, "old.yaml")

	t.Run("plain and gzip files, JSON to a file", func(t *testing.T) {
		out := filepath.Join(dir, "r.json")
		code, stdout, stderr := runCLI(t, "report", "--rules", rulesFile, "--out", out, plain, rotated)
		if code != 0 || stdout != "" {
			t.Fatalf("exit %d, stdout %q, stderr %s", code, stdout, stderr)
		}
		if !strings.Contains(stderr, "4 malformed lines skipped (first: "+plain+":65:") {
			t.Errorf("stderr does not report the malformed lines: %s", stderr)
		}
		data, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		var r report.Report
		if err := json.Unmarshal(data, &r); err != nil {
			t.Fatalf("--out r.json is not JSON: %v", err)
		}
		if len(r.Inputs) != 2 || r.Inputs[0].Gzip || !r.Inputs[1].Gzip || r.Inputs[1].Lines != 66 {
			t.Errorf("inputs %+v", r.Inputs)
		}
		if r.Lines.Counted != 2*61 || r.Lines.Malformed != 4 || r.Totals.Blocked != 2*25 {
			t.Errorf("lines %+v, totals %+v", r.Lines, r.Totals)
		}
		var welfare bool
		for _, row := range r.Rows {
			welfare = welfare || row.GroupTitle == "福祉課"
		}
		if !welfare {
			t.Error("the rules' department titles are not used")
		}
	})
	t.Run("stdin, html from the --out extension, period", func(t *testing.T) {
		data, _ := os.ReadFile(rotated)
		stdin = bytes.NewReader(data)
		defer func() { stdin = os.Stdin }()
		out := filepath.Join(dir, "r.html")
		code, _, stderr := runCLI(t, "report", "--since", "2026-06-15T09:10:00+09:00", "--until", "2026-06-15T09:20:00+09:00", "--out", out, "-")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		page, _ := os.ReadFile(out)
		if !bytes.HasPrefix(page, []byte("<!DOCTYPE html>")) || !bytes.Contains(page, []byte("(stdin) (66 lines, gzip)")) {
			t.Errorf("not the HTML report of stdin: %.300s", page)
		}
		if !bytes.Contains(page, []byte("2026-06-15 09:10 – 2026-06-15 09:19")) {
			t.Errorf("the period is not applied: %.2000s", page)
		}
	})
	t.Run("table by default", func(t *testing.T) {
		code, stdout, _ := runCLI(t, "report", plain)
		if code != 0 || !strings.Contains(stdout, "By department, service and country") {
			t.Errorf("exit %d:\n%s", code, stdout)
		}
	})
	t.Run("truncated gzip: the report, and exit 1", func(t *testing.T) {
		big := filepath.Join(dir, "big.gz")
		data, _ := os.ReadFile(plain)
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		for range 200 {
			zw.Write(data)
		}
		zw.Close()
		os.WriteFile(big, buf.Bytes()[:buf.Len()/2], 0o644)
		code, stdout, stderr := runCLI(t, "report", "--format", "csv", big)
		if code != 1 || !strings.HasPrefix(stdout, "\uFEFFclient_group,") || !strings.Contains(stderr, "unexpected EOF") {
			t.Errorf("exit %d, stderr %s, stdout %.100q", code, stderr, stdout)
		}
	})
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"missing file", []string{"report", plain, filepath.Join(dir, "nope")}, "no such file"},
		{"a directory", []string{"report", dir}, "is a directory"},
		{"bad --since", []string{"report", "--since", "last tuesday", plain}, `"last tuesday" is not a time`},
		{"since after until", []string{"report", "--since", "2026-06-02", "--until", "2026-06-01", plain}, "is not before"},
		{"bad format", []string{"report", "--format", "pdf", plain}, "want one of table, csv, json, html"},
		{"bad rules", []string{"report", "--rules", plain, plain}, "rules are not valid"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tt.args...)
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, tt.want)
			}
		})
	}
}

func TestReportParseWhen(t *testing.T) {
	now := time.Date(2026, 6, 30, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Time{
		"":                          {},
		"2026-06-01T09:00:00+09:00": time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC),
		"2026-06-01":                time.Date(2026, 6, 1, 0, 0, 0, 0, time.Local),
		"2026-06-01T09:30":          time.Date(2026, 6, 1, 9, 30, 0, 0, time.Local),
		"7d":                        now.AddDate(0, 0, -7),
		"36h":                       now.Add(-36 * time.Hour),
	} {
		got, err := parseWhen(in, now)
		if err != nil || !got.Equal(want) {
			t.Errorf("parseWhen(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"yesterday", "-5h", "2026-13-01", "7w"} {
		if _, err := parseWhen(bad, now); err == nil {
			t.Errorf("parseWhen(%q) accepted", bad)
		}
	}
}

func TestWhatifCommand(t *testing.T) {
	log := filepath.Join(whatifFixture, "audit.jsonl")
	oldRules := filepath.Join(whatifFixture, "old.yaml")
	newRules := filepath.Join(whatifFixture, "new.yaml")
	dir := t.TempDir()

	t.Run("unchanged rules: exit 0", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, "whatif", "--rules", oldRules, log)
		if code != 0 || !strings.Contains(stdout, "NO CHANGE: all 61 requests") {
			t.Errorf("exit %d\n%s\n%s", code, stdout, stderr)
		}
	})
	t.Run("known change: exit 1, exact counts", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, "whatif", "--format", "json", log, "--rules", newRules)
		if code != 1 {
			t.Fatalf("exit %d, want 1\n%s", code, stderr)
		}
		var r whatif.Result
		if err := json.Unmarshal([]byte(stdout), &r); err != nil {
			t.Fatal(err)
		}
		if r.Changed != 36 || r.Uncertain != 2 || r.RuleOnlyCount != 4 || r.Lines.Replayed != 61 {
			t.Errorf("changed %d, uncertain %d, rule-only %d, replayed %d; want 36, 2, 4, 61", r.Changed, r.Uncertain, r.RuleOnlyCount, r.Lines.Replayed)
		}
	})
	t.Run("against the config's rules", func(t *testing.T) {
		abs, _ := filepath.Abs(oldRules)
		cfg := filepath.Join(dir, "sekisho.yaml")
		os.WriteFile(cfg, []byte("version: 1\nrules: "+abs+"\nlimits:\n  hold_body_bytes: 64KiB\n"), 0o644)
		code, stdout, _ := runCLI(t, "whatif", "--config", cfg, "--rules", newRules, log)
		if code != 1 || !strings.Contains(stdout, "CHANGES   36 of 61") || !strings.Contains(stdout, "(baseline), on the same facts") {
			t.Errorf("exit %d\n%s", code, stdout)
		}
		code, _, _ = runCLI(t, "whatif", "--config", cfg, "--rules", oldRules, log)
		if code != 0 {
			t.Errorf("the config's own rules against themselves: exit %d, want 0", code)
		}
	})
	t.Run("strict counts rule-only changes", func(t *testing.T) {
		// Only the rule name changes: same outcomes everywhere.
		data, _ := os.ReadFile(oldRules)
		renamed := filepath.Join(dir, "renamed.yaml")
		os.WriteFile(renamed, bytes.ReplaceAll(data, []byte("block-foreign-uploads"), []byte("no-uploads-abroad")), 0o644)
		if code, stdout, _ := runCLI(t, "whatif", "--rules", renamed, log); code != 0 || !strings.Contains(stdout, "Same outcome, another rule: 25") {
			t.Errorf("renamed rule: exit %d, want 0\n%s", code, stdout)
		}
		if code, _, _ := runCLI(t, "whatif", "--strict", "--rules", renamed, log); code != 1 {
			t.Errorf("renamed rule with --strict: exit %d, want 1", code)
		}
	})
	t.Run("gzip from stdin", func(t *testing.T) {
		gz := filepath.Join(dir, "a.gz")
		gzipFile(t, log, gz)
		data, _ := os.ReadFile(gz)
		stdin = bytes.NewReader(data)
		defer func() { stdin = os.Stdin }()
		if code, stdout, _ := runCLI(t, "whatif", "--rules", newRules, "-"); code != 1 || !strings.Contains(stdout, "(stdin) (66 lines, gzip)") {
			t.Errorf("exit %d\n%s", code, stdout)
		}
	})
	empty := filepath.Join(dir, "empty.jsonl")
	os.WriteFile(empty, []byte("garbage\n"), 0o644)
	badRules := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badRules, []byte("version: 1\nrules:\n  - name: x\n    action: explode\n"), 0o644)
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"no --rules", []string{"whatif", log}, "--rules NEW.yaml is required"},
		{"invalid rules", []string{"whatif", "--rules", badRules, log}, "new rules are not valid"},
		{"missing log", []string{"whatif", "--rules", newRules, filepath.Join(dir, "nope")}, "no such file"},
		{"nothing to replay", []string{"whatif", "--rules", newRules, empty}, "nothing to replay"},
		{"bad format", []string{"whatif", "--rules", newRules, "--format", "xml", log}, "want text or json"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runCLI(t, tt.args...)
			if code != 2 || !strings.Contains(stderr, tt.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, tt.want)
			}
		})
	}
}

// The end-to-end check of the audit line: a real proxy decides real
// requests under whatifOld and logs them; replaying that log through the
// same rules changes nothing, and through whatifNew changes exactly what
// the traffic below says. A fact the proxy decides on but does not log (or
// logs differently from what it decided on) fails here.
const whatifOld = `version: 1
client_groups:
  - name: staff
    title: 職員
    networks: [127.0.0.0/8]
rules:
  - name: block-foreign-uploads
    destinations: [foreign]
    upload: true
    action: block
  - name: log-files-to-jp
    domains: [jp.example]
    file_parts: true
    action: log
`

const whatifNew = `version: 1
tunnel_upload_budget:
  foreign: 128KiB
client_groups:
  - name: staff
    title: 職員
    networks: [127.0.0.0/8]
rules:
  - name: allow-us
    countries: [US]
    action: allow
  - name: block-foreign-uploads
    destinations: [foreign]
    upload: true
    action: block
  - name: block-images-to-jp
    domains: [jp.example]
    content_types: ["image/*"]
    action: block
  - name: log-files-to-jp
    domains: [jp.example]
    file_parts: true
    action: log
`

// chunked hides a reader's length, so that the request is sent chunked.
type chunked struct{ io.Reader }

func multipartBody(t *testing.T, ctype string, size int) (*bytes.Buffer, string) {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", `form-data; name="file"; filename="a"`)
	h.Set("Content-Type", ctype)
	p, _ := mw.CreatePart(h)
	p.Write(bytes.Repeat([]byte("x"), size))
	mw.Close()
	return &buf, mw.FormDataContentType()
}

func TestWhatifReplaysProxyLog(t *testing.T) {
	h := proxytest.New(t, proxytest.Options{Rules: whatifOld})
	c := h.Client()
	do := func(method, url string, body io.Reader, ctype string) int {
		t.Helper()
		req, _ := http.NewRequest(method, url, body)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	tunnel := func(host string, up int) {
		t.Helper()
		conn, err := net.DialTimeout("tcp", h.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		target := net.JoinHostPort(host, fmt.Sprint(h.SinkPort))
		fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("CONNECT %s: %v %v", target, resp, err)
		}
		conn.Write(bytes.Repeat([]byte("u"), up)) // fails once over the budget
		conn.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, br)
	}
	websocket := func(host string, up int) {
		t.Helper()
		conn, err := net.DialTimeout("tcp", h.Addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n", h.URL(host, "/ws"), host)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
			t.Fatalf("websocket: %v %v", resp, err)
		}
		br.ReadString('\n')
		conn.Write(bytes.Repeat([]byte("w"), up))
		conn.(*net.TCPConn).CloseWrite()
		io.Copy(io.Discard, br)
	}

	small := strings.Repeat("d", 1024)
	// a) uploads to Korea: blocked under both.
	for range 3 {
		if s := do("POST", h.URL("kr.example", "/up"), strings.NewReader(small), "text/plain"); s != 403 {
			t.Fatalf("upload to KR: %d", s)
		}
	}
	// b) uploads to the US: blocked, then allowed by allow-us.
	for range 2 {
		do("POST", h.URL("us.example", "/up"), strings.NewReader(small), "application/octet-stream")
	}
	// c) downloads from the US: allowed, then allowed by another rule.
	for range 2 {
		do("GET", h.URL("us.example", "/"), nil, "")
	}
	// d) chunked multipart image to jp.example, one beyond the hold limit:
	// logged (the proxy looks into the body), then blocked by type.
	for _, size := range []int{100 << 10, 2 << 10} {
		body, ct := multipartBody(t, "image/png", size)
		if s := do("POST", h.URL("jp.example", "/form"), chunked{body}, ct); s != 200 {
			t.Fatalf("multipart to JP: %d", s)
		}
	}
	// e) a text file to jp.example: logged under both.
	body, ct := multipartBody(t, "text/plain", 500)
	do("POST", h.URL("jp.example", "/form"), body, ct)
	// f) tunnels to Korea under the old budget, over the new one.
	tunnel("kr.example", 300<<10)
	tunnel("kr.example", 300<<10)
	// g) a tunnel cut at the old budget: cut under both.
	tunnel("kr.example", 2<<20)
	// h) a download in Japan.
	do("GET", h.URL("jp.example", "/"), nil, "")
	// i) a WebSocket to Korea, under the old budget, over the new one.
	websocket("kr.example", 200<<10)

	var log string
	deadline := time.Now().Add(10 * time.Second)
	for {
		log = h.Audit()
		if strings.Count(log, "\n") >= 15 || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	dir := t.TempDir()
	logFile := filepath.Join(dir, "audit.jsonl")
	os.WriteFile(logFile, []byte(log), 0o644)
	oldFile, newFile := filepath.Join(dir, "old.yaml"), filepath.Join(dir, "new.yaml")
	os.WriteFile(oldFile, []byte(whatifOld), 0o644)
	os.WriteFile(newFile, []byte(whatifNew), 0o644)

	code, stdout, stderr := runCLI(t, "whatif", "--rules", oldFile, logFile)
	if code != 0 {
		t.Errorf("the rules that decided the log change it: exit %d\n%s\n%s\nlog:\n%s", code, stdout, stderr, log)
	}
	code, stdout, stderr = runCLI(t, "whatif", "--format", "json", "--rules", newFile, logFile)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s\n%s", code, stdout, stderr)
	}
	var r whatif.Result
	if err := json.Unmarshal([]byte(stdout), &r); err != nil {
		t.Fatal(err)
	}
	trans := map[string]int64{}
	for _, tr := range r.Transitions {
		trans[tr.From.String()+"→"+tr.To.String()] = tr.Count
	}
	want := map[string]int64{"block→allow": 2, "log→block": 2, "allow→cut": 3}
	if fmt.Sprint(trans) != fmt.Sprint(want) || r.Changed != 7 || r.Uncertain != 0 || r.RuleOnlyCount != 2 || r.Lines.Replayed != 15 {
		t.Errorf("transitions %v (want %v), changed %d (7), uncertain %d (0), rule-only %d (2), replayed %d (15)\n%s\nlog:\n%s",
			trans, want, r.Changed, r.Uncertain, r.RuleOnlyCount, r.Lines.Replayed, stdout, log)
	}

	// And the report of the same log.
	code, stdout, stderr = runCLI(t, "report", "--format", "json", "--rules", oldFile, logFile)
	if code != 0 {
		t.Fatalf("report: exit %d: %s", code, stderr)
	}
	var rep report.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Totals.Requests != 15 || rep.Totals.Blocked != 5 || rep.Totals.OverBudget != 1 || rep.Lines.Malformed != 0 {
		t.Errorf("report totals %+v, lines %+v", rep.Totals, rep.Lines)
	}
	for _, row := range rep.Rows {
		if row.Group != "staff" || row.GroupTitle != "職員" {
			t.Errorf("row %+v: want department staff (職員)", row)
		}
	}
}

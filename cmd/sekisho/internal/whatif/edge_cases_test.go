package whatif

import (
	"bytes"
	"strings"
	"testing"

	"github.com/sekisho/sekisho/rules"
)

func compileRules(t *testing.T, yaml string) *rules.Set {
	t.Helper()
	set, err := rules.Compile([]rules.Source{{Name: "r.yaml", Data: []byte(yaml)}})
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// TestInspectedSessionNotReplayed: an intercepted CONNECT writes a session
// line (kind tunnel, mode inspected) and one line per request inside. When
// the new rules open it too, the session's decision has no effect (it is
// opened even when blocked, and every request inside is decided on its
// own): only the request is replayed, and one changed request counts once.
func TestInspectedSessionNotReplayed(t *testing.T) {
	newRules := compileRules(t, `version: 1
builtin_catalog: false
domestic: [JP]
default: allow
inspection:
  default: true
rules:
  - name: block-kr
    domains: [example.kr]
    action: block
`)
	log := strings.Join([]string{
		// the session
		`{"time":"2026-06-15T09:00:05+09:00","level":"INFO","msg":"request","id":"s1","kind":"tunnel","client":"10.1.2.3:5000","method":"CONNECT","host":"example.kr","port":443,"addr":"203.0.113.7:443","country":"KR","effective_country":"KR","destination":"foreign","service":"other","client_group":"other","rule":"default","action":"allow","mode":"inspected","stream":true,"budget":1048576,"upload_bytes":4000,"download_bytes":9000,"status":200,"inspection":"default"}`,
		// the one request inside it
		`{"time":"2026-06-15T09:00:04+09:00","level":"INFO","msg":"request","id":"r1","kind":"request","client":"10.1.2.3:5000","method":"GET","scheme":"https","host":"example.kr","port":443,"path":"/","addr":"203.0.113.7:443","country":"KR","effective_country":"KR","destination":"foreign","service":"other","client_group":"other","rule":"default","action":"allow","mode":"inspected","upload_bytes":0,"download_bytes":9000,"status":200}`,
	}, "\n") + "\n"
	p := New(Options{Rules: newRules})
	if err := p.Read("audit.jsonl", bytes.NewReader([]byte(log))); err != nil {
		t.Fatal(err)
	}
	r := p.Result()
	if r.Lines.Replayed != 1 || r.Changed != 1 || r.Lines.InspectedSessions != 1 {
		t.Errorf("replayed %d, changed %d, sessions %d; want 1, 1 and 1", r.Lines.Replayed, r.Changed, r.Lines.InspectedSessions)
	}
}

// TestTerminalEscapesInExamples: a path is logged decoded, so a client can
// put control characters in it; they are escaped before they reach the
// admin's terminal.
func TestTerminalEscapesInExamples(t *testing.T) {
	newRules := compileRules(t, `version: 1
builtin_catalog: false
domestic: [JP]
default: allow
rules:
  - name: block-kr
    domains: [example.kr]
    action: block
`)
	log := `{"time":"2026-06-15T09:00:04+09:00","level":"INFO","msg":"request","id":"r1","kind":"request","client":"10.1.2.3:5000","method":"GET","scheme":"http","host":"example.kr","port":80,"path":"/\u001b]0;pwned\u0007\u001b[2J","country":"KR","effective_country":"KR","destination":"foreign","service":"other","client_group":"other","rule":"default","action":"allow","mode":"http","status":200}` + "\n"
	p := New(Options{Rules: newRules})
	if err := p.Read("audit.jsonl", strings.NewReader(log)); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := WriteText(&out, p.Result(), false); err != nil {
		t.Fatal(err)
	}
	if bytes.IndexByte(out.Bytes(), 0x1b) >= 0 {
		t.Errorf("whatif's text output carries a raw ESC from a client-controlled path:\n%q", out.String())
	}
}

// TestInspectionChange: a change to the "inspection:" section alone: the
// tunnel to example.kr is no longer opened, so what was decided request by
// request inside it now goes up an opaque tunnel under its budget. That is
// a change (inspected → allow), which the exit status reports.
func TestInspectionChange(t *testing.T) {
	const base = `version: 1
builtin_catalog: false
domestic: [JP]
default: allow
tunnel_upload_budget: {foreign: 1MiB, domestic: unlimited}
rules:
  - name: block-foreign-uploads
    destinations: [foreign]
    upload: true
    action: block
`
	newRules := compileRules(t, base+`inspection:
  default: false
`)
	log := strings.Join([]string{
		`{"time":"2026-06-15T09:00:04+09:00","level":"WARN","msg":"request","id":"r1","kind":"request","client":"10.1.2.3:5000","method":"POST","scheme":"https","host":"example.kr","port":443,"path":"/upload","addr":"203.0.113.7:443","country":"KR","effective_country":"KR","destination":"foreign","service":"other","client_group":"other","rule":"block-foreign-uploads","action":"block","mode":"inspected","body_bytes":204800,"content_type":"multipart/form-data","file_parts":"yes","upload_bytes":0,"download_bytes":0,"status":403}`,
		`{"time":"2026-06-15T09:00:05+09:00","level":"INFO","msg":"request","id":"s1","kind":"tunnel","client":"10.1.2.3:5000","method":"CONNECT","host":"example.kr","port":443,"addr":"203.0.113.7:443","country":"KR","effective_country":"KR","destination":"foreign","service":"other","client_group":"other","rule":"default","action":"allow","mode":"inspected","stream":true,"budget":1048576,"upload_bytes":0,"download_bytes":0,"status":200,"inspection":"open-foreign"}`,
	}, "\n") + "\n"
	p := New(Options{Rules: newRules})
	if err := p.Read("audit.jsonl", strings.NewReader(log)); err != nil {
		t.Fatal(err)
	}
	r := p.Result()
	found := false
	for _, g := range r.Changes {
		if g.From == Inspected && g.To == Allow && g.FromRule == "open-foreign" && g.ToRule == "default" {
			found = true
		}
	}
	if !found {
		t.Errorf("no inspected → allow change for the CONNECT no longer opened: %+v", r.Changes)
	}
}

package rules

import (
	"strings"
	"testing"
)

func TestInspect(t *testing.T) {
	set := mustCompile(t, `version: 1
client_groups:
  - name: it
    networks: [10.9.0.0/16]
inspection:
  default: false
  rules:
    - name: not-for-it
      clients: [it]
      inspect: false
    - name: open-foreign
      destinations: [foreign]
      inspect: true
    - name: open-slack
      services: [slack]
      inspect: true
`)
	for _, tc := range []struct {
		line, country, want string
		inspect             bool
		client              string
	}{
		{"CONNECT files.example.com:443", "KR", "open-foreign", true, ""},
		{"CONNECT files.example.jp:443", "JP", "default", false, ""},
		{"CONNECT slack.com:443", "JP", "open-slack", true, ""},
		{"CONNECT files.example.com:443", "KR", "not-for-it", false, "10.9.1.1"},
		{"CONNECT push.apple.com:443", "US", "bypass:", false, ""},
		{"CONNECT x.push.apple.com:443", "US", "bypass:", false, ""},
		{"CONNECT 203.0.113.5:443", "US", "open-foreign", true, ""},
	} {
		t.Run(tc.line, func(t *testing.T) {
			f := req(t, tc.line, tc.country)
			if tc.client != "" {
				f.Client = mustAddr(tc.client)
			}
			set.Prepare(&f)
			in := set.Inspect(&f)
			if in.Inspect != tc.inspect || !strings.HasPrefix(in.Rule, tc.want) {
				t.Errorf("Inspect = %v by %q, want %v by %q", in.Inspect, in.Rule, tc.inspect, tc.want)
			}
			if strings.HasPrefix(tc.want, "bypass:") && (in.Bypass == nil || in.Bypass.Reason == "") {
				t.Errorf("a bypass must say which entry and why: %+v", in.Bypass)
			}
		})
	}
	f := req(t, "CONNECT x.push.apple.com:443", "US")
	set.Prepare(&f)
	if n := testing.AllocsPerRun(100, func() { set.Inspect(&f) }); n != 0 {
		t.Errorf("Inspect allocates %v times", n)
	}
}

func TestInspectBypassSwitches(t *testing.T) {
	entries, err := BuiltinBypass()
	if err != nil || len(entries) == 0 {
		t.Fatalf("built-in bypass list: %v (%d entries)", err, len(entries))
	}
	first := entries[0]
	host := first.Domains[0]
	for _, tc := range []struct {
		name, rules string
		inspect     bool
	}{
		{"builtin bypass wins over a broad rule", "inspection:\n  default: true\n", false},
		{"builtin bypass off", "inspection:\n  default: true\n  builtin_bypass: false\n", true},
		{"one entry exempted", "inspection:\n  default: true\n  bypass_except: [" + first.Name + "]\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := mustCompile(t, "version: 1\n"+tc.rules)
			f := req(t, "CONNECT "+host+":443", "US")
			set.Prepare(&f)
			if in := set.Inspect(&f); in.Inspect != tc.inspect {
				t.Errorf("Inspect(%s) = %v by %s, want %v", host, in.Inspect, in.Rule, tc.inspect)
			}
		})
	}
}

func TestInspectionErrors(t *testing.T) {
	for _, tc := range []struct{ name, src, want string }{
		{"no inspect", "version: 1\ninspection:\n  rules:\n    - name: r\n      destinations: [foreign]\n",
			`test.yaml:4:7: inspection rule "r" needs inspect: true or false`},
		{"body condition", "version: 1\ninspection:\n  rules:\n    - name: r\n      upload: true\n      inspect: true\n",
			`test.yaml:5:7: unknown field "upload" in an inspection rule (known fields: name, inspect, services, domains, networks, destinations, countries, clients, ports)`},
		{"unknown exception", "version: 1\ninspection:\n  bypass_except: [nope]\n",
			`test.yaml:3:19: bypass_except: "nope" is not an entry of the built-in bypass list`},
		{"test inspect on a GET", "version: 1\ntests:\n  - name: t\n    request: GET https://example.com/\n    country: JP\n    expect: allow\n    inspect: true\n",
			`test.yaml:3:5: test "t": inspect: applies to CONNECT requests only (request "GET https://example.com/")`},
		{"test inspect fails", "version: 1\ninspection:\n  default: false\ntests:\n  - name: t\n    request: CONNECT example.com:443\n    country: US\n    expect: allow\n    inspect: true\n",
			`test.yaml:5: test "t" failed: expected inspect true, got false (by default) (service other, effective country US, destination foreign)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile([]Source{{Name: "test.yaml", Data: []byte(tc.src)}})
			if err == nil || err.Error() != tc.want {
				t.Errorf("got:\n%v\nwant:\n%s", err, tc.want)
			}
		})
	}
}

func TestBuiltinBypassList(t *testing.T) {
	entries, err := BuiltinBypass()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Reason == "" || len(e.Domains) == 0 {
			t.Errorf("bypass %q needs a reason and domains", e.Name)
		}
		for _, d := range e.Domains {
			if d != strings.ToLower(d) {
				t.Errorf("bypass %q: domain %q", e.Name, d)
			}
		}
	}
}

// Package proxy carries the traffic: the forward proxy server (plain HTTP in
// absolute form through github.com/elazarl/goproxy, CONNECT tunnels with an
// upload budget), the gate that keeps it from being an open proxy, the
// admin handler, and what sekisho answers itself (local.go): on the proxy
// port its pages — the PAC file (to any client), the start page with the
// CA certificate, the self-test — and the self-test hosts under
// selftest.sekisho.invalid, which are never resolved or dialed.
//
// One request, end to end: ServeHTTP checks the connection's framing verdict
// and the client's network; the destination host is normalised and matched
// to a service; package dial resolves it, geolocates every address, prefers
// a domestic one and pins it; the rules decide on the facts (a bounded prefix
// of the body is held back only when a rule needs it); a blocked request is
// answered with the block page before anything is dialed, without reading
// its body; an allowed one is sent to exactly the pinned address, its body
// streaming through (bodyless GET and HEAD, plain or inside an intercepted
// tunnel, by package h1client on the handler's goroutine; everything else
// by net/http's Transport); the audit line and the metrics close the
// request.
//
// Non-goals: the proxy does not read files or parse rules (it is handed a
// RulesSource and a geo Locator), and it does not decide anything the rules
// do not say.
package proxy

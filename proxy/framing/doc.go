// Package framing finds HTTP/1.x requests whose message framing is
// ambiguous, before net/http hides the evidence.
//
// A request that carries both Content-Length and Transfer-Encoding is the
// classic request-smuggling vector: two parsers that disagree on where the
// body ends disagree on where the next request starts. sekisho answers such
// requests with 400 and closes the connection. net/http cannot tell us about
// them: its server drops Content-Length when Transfer-Encoding: chunked is
// present (RFC 9112 §6.3 allows that) and drops Transfer-Encoding from
// HTTP/1.0 requests, so the handler sees a clean request.
//
// [Conn] wraps an accepted client connection. Its Read passes every byte
// through unchanged while a small state machine follows the request stream
// exactly as net/http's server parses it (request line, header lines,
// Content-Length or chunked body, trailers, the blank lines Go tolerates
// after a POST) and records, by ordinal on the connection, the first request
// whose framing is ambiguous. The handler calls [Conn.Next] once per request
// it is given, in order, and answers 400 + "Connection: close" when the
// result is not [None].
//
// # Usage
//
//	ln = framing.NewListener(ln) // plain TCP, before any TLS
//	srv := &http.Server{
//		// OPTIONS * would otherwise be answered by net/http without
//		// calling the handler, and every later ordinal would be off by one.
//		DisableGeneralOptionsHandler: true,
//		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
//			return context.WithValue(ctx, connKey{}, c.(*framing.Conn))
//		},
//		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
//			if p := r.Context().Value(connKey{}).(*framing.Conn).Next(); p != framing.None {
//				w.Header().Set("Connection", "close")
//				http.Error(w, p.String(), http.StatusBadRequest)
//				return
//			}
//			// ...
//		}),
//	}
//
// # Contract
//
//   - Next must be called exactly once for every request that net/http hands
//     to the handler, and for no other. net/http answers some requests
//     itself; all of those except "OPTIONS *" (see above) make it close the
//     connection (malformed requests, unsupported Transfer-Encoding, a bad
//     Content-Length, Expect other than 100-continue, oversized headers), so
//     they cannot shift later ordinals.
//   - Read must not be called concurrently with itself (net/http never
//     does). Next may run concurrently with Read: net/http reads ahead on a
//     background goroutine while the handler runs.
//   - After the first Problem the scanner stops: the handler is expected to
//     close the connection. Next reports the Problem for that ordinal only.
//
// # When scanning stops
//
// The scanner stops for good (Read becomes a plain pass-through and Next
// returns None from then on) after a request with a Problem, after a CONNECT
// request's head (goproxy always hijacks CONNECT, so what follows is tunnel
// data), and at the first byte sequence that net/http itself would reject:
// net/http then answers 400 (or 501, 505, 431) and closes the connection, so
// nothing after it matters. The scanner is deliberately lenient where
// net/http is strict about things that do not affect framing (URL syntax,
// Host header, header value bytes), because net/http rejects those requests
// and closes the connection anyway; it is exact wherever framing is decided.
//
// Requests with an Upgrade header do not stop the scanner: goproxy takes
// over the connection only for WebSocket, other upgrade tokens are proxied
// as ordinary requests and the connection keeps serving HTTP/1.1, so
// stopping there would let a client switch the check off with one header.
// After a real hijack the handler never calls Next again, so whatever the
// scanner makes of tunnel bytes is never reported.
//
// # Non-goals
//
// The package does not parse requests for anyone (it keeps no header
// values, only a 128-byte prefix and a 16-byte suffix of the current line),
// does not buffer, does not answer requests itself, and does not look at
// requests inside hijacked tunnels, including the inner requests goproxy
// reads from an intercepted CONNECT. It is HTTP/1.x only.
package framing

package proxy

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"sync"

	"github.com/sekisho/sekisho/proxy/metrics"
	"github.com/sekisho/sekisho/proxy/pages"
)

// problemTexts are the titles and explanations of each refusal or failure,
// in English and Japanese.
var problemTexts = map[string][4]string{
	metrics.ReasonBadRequest: {
		"Bad request", "不正なリクエストです",
		"The proxy could not understand this request.", "プロキシがこのリクエストを解釈できませんでした。",
	},
	metrics.ReasonAmbiguousFraming: {
		"Ambiguous request refused", "あいまいなリクエストを拒否しました",
		"The request's length headers contradict each other (for example both Content-Length and Transfer-Encoding), so where its body ends cannot be known.",
		"リクエストの長さを示すヘッダーが矛盾しているため（Content-Length と Transfer-Encoding の両方など）、拒否しました。",
	},
	metrics.ReasonUnsupportedRequest: {
		"Request not supported", "このリクエストには対応していません",
		"This kind of request cannot be carried by the proxy.", "この種類のリクエストはプロキシで中継できません。",
	},
	metrics.ReasonClientNotAllowed: {
		"This proxy does not serve your network", "このネットワークからは利用できません",
		"Your computer's address is not in a network that may use this proxy.", "お使いの端末のアドレスは、このプロキシの利用を許可されたネットワークにありません。",
	},
	metrics.ReasonDestinationDenied: {
		"This destination cannot be reached through the proxy", "この送信先には接続できません",
		"The destination is an internal or special address that the proxy never connects to.", "送信先は、プロキシが接続しない内部用または特殊なアドレスです。",
	},
	metrics.ReasonResolve: {
		"The destination's name could not be found", "送信先の名前を解決できませんでした",
		"DNS has no address for this name, or did not answer in time.", "この名前のアドレスが DNS で見つからないか、時間内に応答がありませんでした。",
	},
	metrics.ReasonDial: {
		"Cannot connect to the destination", "送信先に接続できませんでした",
		"The destination server refused the connection or could not be reached.", "送信先のサーバーが接続を拒否したか、到達できませんでした。",
	},
	metrics.ReasonTimeout: {
		"The destination did not answer in time", "送信先から時間内に応答がありませんでした",
		"The destination server took too long to respond.", "送信先のサーバーの応答に時間がかかりすぎました。",
	},
	metrics.ReasonUpstreamTLS: {
		"The destination's certificate could not be verified", "送信先の証明書を検証できませんでした",
		"The connection to the destination was not made: its TLS certificate is not valid for this name or not issued by a trusted authority. This may be an attack; do not work around it.",
		"送信先の TLS 証明書がこの名前に対して有効でないか、信頼できる認証局が発行したものではないため、接続しませんでした。攻撃の可能性があります。回避しないでください。",
	},
	metrics.ReasonDomainFronting: {
		"Request for another site refused", "別のサイトへのリクエストを拒否しました",
		"A request inside an HTTPS connection named a different site than the connection itself (domain fronting), a way to hide where data goes.",
		"HTTPS 接続の中のリクエストが、接続先とは別のサイトを指定していました（ドメインフロンティング）。データの送信先を隠す手口のため拒否しました。",
	},
	metrics.ReasonUpstream: {
		"The destination's answer could not be read", "送信先の応答を読み取れませんでした",
		"The connection to the destination failed before a complete answer arrived.", "完全な応答を受け取る前に、送信先との接続が失敗しました。",
	},
}

func problemFor(status int, reason, why string) *pages.Problem {
	t, ok := problemTexts[reason]
	if !ok {
		t = [4]string{http.StatusText(status), "エラーが発生しました", "The proxy could not complete this request.", "プロキシはこのリクエストを完了できませんでした。"}
	}
	return &pages.Problem{Status: status, Code: reason, Title: t[0], TitleJA: t[1], Detail: t[2], DetailJA: t[3], Why: why}
}

// writeProblem answers on w. closeConn closes the client connection after
// the answer (nothing more on it can be trusted, or a body was not read).
func (s *Server) writeProblem(w http.ResponseWriter, r *http.Request, p *pages.Problem, closeConn bool) {
	ct, body := pages.RenderProblem(p, pages.WantsJSON(r.Header.Get("Accept")))
	h := w.Header()
	h.Set("Content-Type", ct)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", pages.PageCSP)
	h.Set("X-Sekisho-Request-Id", p.RequestID)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if closeConn {
		h.Set("Connection", "close")
	}
	w.WriteHeader(p.Status)
	_, _ = w.Write(body)
}

// refuseResponse is refuse for goproxy handlers, which answer with an
// *http.Response.
func (s *Server) refuseResponse(req *http.Request, st *state, status int, reason, why string) *http.Response {
	s.metrics.Refused.WithLabelValues(reason).Inc()
	st.status, st.reason = status, reason
	return s.problemResponse(req, st, problemFor(status, reason, why))
}

func (s *Server) problemResponse(req *http.Request, st *state, p *pages.Problem) *http.Response {
	p.RequestID = st.id
	p.Host = st.facts.Host
	p.Helpdesk = s.helpdesk()
	ct, body := pages.RenderProblem(p, pages.WantsJSON(req.Header.Get("Accept")))
	return s.finishing(st, s.response(req, p.Status, ct, body, st.id, st.facts.Body.Present))
}

// blockResponse is the 403 for a blocked request. The client's body is not
// read: the connection is closed after the answer, so not one byte of the
// body needs to cross even into sekisho.
func (s *Server) blockResponse(req *http.Request, st *state) *http.Response {
	ct, body := pages.RenderBlock(s.blockInfo(st), pages.WantsJSON(req.Header.Get("Accept")))
	return s.finishing(st, s.response(req, http.StatusForbidden, ct, body, st.id, true))
}

// finishing makes closing resp's body finish st's record: inside an
// intercepted tunnel, goproxy closes the body when the exchange is over and
// no handler of ours returns afterwards.
func (s *Server) finishing(st *state, resp *http.Response) *http.Response {
	st.closeAfter = resp.Close
	resp.Body = &hookBody{ReadCloser: resp.Body, onClose: func() { s.finish(st) }}
	return resp
}

// hookBody runs onClose once when the body is closed.
type hookBody struct {
	io.ReadCloser
	onClose func()
	once    sync.Once
}

func (b *hookBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.onClose)
	return err
}

func (s *Server) blockInfo(st *state) *pages.Block {
	f := &st.facts
	b := &pages.Block{
		RequestID:    st.id,
		Service:      f.ServiceName(),
		ServiceTitle: "—",
		Host:         f.Host,
		Country:      f.Effective,
		Dialed:       f.Country,
		Declared:     f.Declared,
		Destination:  f.Destination.String(),
		Method:       f.Method,
		BodyBytes:    bodyBytes(&f.Body),
		Rule:         st.decision.RuleName(),
		Helpdesk:     s.helpdesk(),
	}
	if f.Service != nil {
		b.ServiceTitle = f.Service.DisplayName()
	}
	if r := st.decision.Rule; r != nil {
		b.Reason, b.Alternative = r.Message, r.Alternative
	}
	return b
}

func (s *Server) response(req *http.Request, status int, ct string, body []byte, id string, closeConn bool) *http.Response {
	h := http.Header{}
	h.Set("Content-Type", ct)
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", pages.PageCSP) // nothing in sekisho's pages loads or runs
	h.Set("X-Sekisho-Request-Id", id)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	if closeConn {
		h.Set("Connection", "close")
	}
	return &http.Response{
		StatusCode:    status,
		Status:        strconv.Itoa(status) + " " + http.StatusText(status),
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)),
		Close:         closeConn,
		Request:       req,
	}
}

// serveNonProxy is goproxy's handler for requests that are not proxy
// requests. ServeHTTP routes those to serveLocal before goproxy sees them;
// this is its fallback.
func (s *Server) serveNonProxy(w http.ResponseWriter, r *http.Request) {
	st := stateFrom(r.Context())
	if st == nil {
		st = &state{id: s.newID()}
	}
	s.serveLocal(w, r, st)
}

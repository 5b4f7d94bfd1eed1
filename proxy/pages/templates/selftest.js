(function () {
  "use strict";
  // sekisho self-test: three requests to names that only sekisho answers
  // (*.selftest.sekisho.invalid, which no DNS resolves). The page's CSP
  // allows this script by its hash and connections to those names only.
  var root = document.getElementById("selftest");
  var TEXT = {
    running: "確認中… / Checking…",
    ok: "OK",
    fail: "NG — 対処が必要です / Action needed",
    error: "確認できませんでした / Could not check",
    skip: "対象外 / Not applicable"
  };

  function show(id, state, detail) {
    var li = document.getElementById(id);
    li.setAttribute("data-state", state);
    li.querySelector(".state").textContent = TEXT[state];
    if (detail) {
      li.querySelector(".detail").textContent = detail;
    }
  }

  // call fetches url and resolves to {status, body} (body: parsed JSON or
  // null); a network or TLS error rejects.
  function call(url, init) {
    var ctl = new AbortController();
    var timer = setTimeout(function () { ctl.abort(); }, 15000);
    var opts = { cache: "no-store", credentials: "omit", mode: "cors", redirect: "error", signal: ctl.signal };
    Object.keys(init || {}).forEach(function (k) { opts[k] = init[k]; });
    return fetch(url, opts).then(function (resp) {
      return resp.text().then(function (text) {
        clearTimeout(timer);
        var body = null;
        try { body = JSON.parse(text); } catch (e) { body = null; }
        return { status: resp.status, body: body };
      });
    }, function (err) {
      clearTimeout(timer);
      throw err;
    });
  }

  function reqID(r) {
    return r.body && r.body.request_id ? "受付番号 / Request ID: " + r.body.request_id : "";
  }

  function failed(err) {
    return "接続できませんでした / The request failed" + (err && err.message ? " (" + err.message + ")" : "");
  }

  function checkPAC() {
    var id = "check-pac";
    show(id, "running");
    return call(root.getAttribute("data-pac-url")).then(function (r) {
      if (r.status === 200 && r.body && r.body.sekisho === true) {
        show(id, "ok", reqID(r));
      } else {
        show(id, "fail", "HTTP " + r.status);
      }
    }, function (err) { show(id, "fail", failed(err)); });
  }

  function checkCA() {
    var id = "check-ca";
    if (root.getAttribute("data-intercept") !== "on") {
      show(id, "skip", "TLS の検査は無効です / TLS interception is off");
      return Promise.resolve();
    }
    show(id, "running");
    return call(root.getAttribute("data-ca-url")).then(function (r) {
      if (r.status === 200 && r.body && r.body.sekisho === true) {
        show(id, "ok", reqID(r));
      } else {
        show(id, "fail", "HTTP " + r.status);
      }
    }, function (err) { show(id, "fail", failed(err)); });
  }

  function checkUpload() {
    var id = "check-upload";
    show(id, "running");
    return call(root.getAttribute("data-upload-url"), {
      method: "POST",
      headers: { "Accept": "application/json", "Content-Type": "text/plain" },
      body: "sekisho self-test: a test upload that must be stopped. 関所の自己診断: 止められるべきテスト送信です。"
    }).then(function (r) {
      if (r.status === 403 && r.body && r.body.error === "upload_blocked") {
        show(id, "ok", "規則 / rule " + r.body.rule + " · " + reqID(r));
      } else if (r.body && r.body.would_block) {
        show(id, "fail", "報告のみモード: 止められずに記録だけされました / Report-only mode: logged, not stopped · " + reqID(r));
      } else {
        show(id, "fail", "HTTP " + r.status + " " + reqID(r));
      }
    }, function (err) { show(id, "error", failed(err)); });
  }

  checkPAC().then(checkCA).then(checkUpload).then(function () {
    var states = ["check-pac", "check-ca", "check-upload"].map(function (id) {
      return document.getElementById(id).getAttribute("data-state");
    });
    var ok = states.indexOf("fail") < 0 && states.indexOf("error") < 0;
    var summary = document.getElementById("summary");
    summary.setAttribute("data-state", ok ? "ok" : "fail");
    summary.textContent = ok
      ? "すべて正常です / All checks passed"
      : "NG の項目があります。下の対処を行うか、情報システム担当に連絡してください / Some checks failed: follow the advice below, or contact the helpdesk";
    root.setAttribute("data-done", "true");
  });
})();

// pacshim.js evaluates a PAC file the way a browser does, for the tests of
// proxy/pages only: the PAC runs in a fresh V8 context (node:vm) holding
// the standard PAC helper functions, and nothing else.
//
// The helpers that would resolve a name (dnsResolve, isResolvable, and
// isInNet or isInNetEx called with a name) record the call and fail: a PAC
// sekisho generates must never make a browser wait for DNS.
//
//   node pacshim.js FILE.pac [--no-isInNetEx] < cases.json
//
// cases.json is [{"url": "...", "host": "..."}]; the output is
// {"results": ["PROXY ...", ...], "dns": ["dnsResolve(x)", ...]}.
"use strict";
const fs = require("fs");
const vm = require("vm");

const args = process.argv.slice(2);
const pacSource = fs.readFileSync(args[0], "utf8");
const withEx = !args.includes("--no-isInNetEx");
const dnsCalls = [];

function ipv4(s) {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  let n = 0n;
  for (let i = 1; i <= 4; i++) {
    const v = Number(m[i]);
    if (v > 255) return null;
    n = (n << 8n) | BigInt(v);
  }
  return n;
}

function ipv6(s) {
  if (s.indexOf(":") < 0) return null;
  const v4 = /:(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const n = ipv4(v4[1]);
    if (n === null) return null;
    s = s.slice(0, v4.index + 1) + (n >> 16n).toString(16) + ":" + (n & 0xffffn).toString(16);
  }
  const halves = s.split("::");
  if (halves.length > 2) return null;
  const parse = (p) => (p === "" ? [] : p.split(":").map((x) => {
    if (!/^[0-9a-f]{1,4}$/i.test(x)) throw new Error("bad");
    return parseInt(x, 16);
  }));
  let groups;
  try {
    const head = parse(halves[0]);
    const rest = halves.length === 2 ? parse(halves[1]) : [];
    const total = head.length + rest.length;
    if (halves.length === 2) {
      if (total > 7) return null;
      groups = head.concat(new Array(8 - total).fill(0), rest);
    } else {
      groups = head;
      if (groups.length !== 8) return null;
    }
  } catch (e) {
    return null;
  }
  let n = 0n;
  for (const g of groups) n = (n << 16n) | BigInt(g);
  return n;
}

const helpers = {
  isPlainHostName: (host) => host.indexOf(".") < 0,
  dnsDomainIs: (host, domain) => host.length >= domain.length && host.substring(host.length - domain.length) === domain,
  localHostOrDomainIs: (host, hostdom) => host === hostdom || hostdom.lastIndexOf(host + ".", 0) === 0,
  dnsDomainLevels: (host) => host.split(".").length - 1,
  shExpMatch: (str, shexp) => {
    const re = "^" + shexp.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".") + "$";
    return new RegExp(re).test(str);
  },
  isInNet: (host, pattern, mask) => {
    const h = ipv4(host);
    if (h === null) {
      dnsCalls.push("isInNet(" + host + ")");
      throw new Error("isInNet called with a name: " + host);
    }
    const m = ipv4(mask);
    return (h & m) === (ipv4(pattern) & m);
  },
  dnsResolve: (host) => {
    dnsCalls.push("dnsResolve(" + host + ")");
    throw new Error("dnsResolve called: " + host);
  },
  isResolvable: (host) => {
    dnsCalls.push("isResolvable(" + host + ")");
    throw new Error("isResolvable called: " + host);
  },
  myIpAddress: () => "10.1.2.3",
  alert: () => {},
};
if (withEx) {
  helpers.isInNetEx = (host, prefix) => {
    const [net, bitsStr] = prefix.split("/");
    const bits = BigInt(bitsStr);
    let h = ipv6(host), n = ipv6(net), width = 128n;
    if (h === null || n === null) {
      h = ipv4(host); n = ipv4(net); width = 32n;
    }
    if (h === null || n === null) {
      dnsCalls.push("isInNetEx(" + host + ")");
      throw new Error("isInNetEx called with a name: " + host);
    }
    const mask = bits === 0n ? 0n : ((1n << bits) - 1n) << (width - bits);
    return (h & mask) === (n & mask);
  };
  helpers.dnsResolveEx = (host) => {
    dnsCalls.push("dnsResolveEx(" + host + ")");
    throw new Error("dnsResolveEx called: " + host);
  };
  helpers.isResolvableEx = (host) => {
    dnsCalls.push("isResolvableEx(" + host + ")");
    throw new Error("isResolvableEx called: " + host);
  };
  helpers.myIpAddressEx = () => "10.1.2.3";
}

const ctx = vm.createContext(Object.assign(Object.create(null), helpers));
vm.runInContext(pacSource, ctx, { filename: args[0], timeout: 1000 });
if (typeof ctx.FindProxyForURL !== "function") {
  console.error("the PAC file defines no FindProxyForURL");
  process.exit(2);
}
const cases = JSON.parse(fs.readFileSync(0, "utf8"));
const results = cases.map((c) => {
  try {
    return String(ctx.FindProxyForURL(c.url, c.host));
  } catch (e) {
    return "ERROR: " + e.message;
  }
});
process.stdout.write(JSON.stringify({ results, dns: dnsCalls }) + "\n");

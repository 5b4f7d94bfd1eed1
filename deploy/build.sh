#!/usr/bin/env bash
# deploy/build.sh — the container image's build step, without Docker.
#
#   deploy/build.sh               build, then prove the binary works (CI runs this)
#   deploy/build.sh --build-only  only build
#
# Environment: VERSION (default: git describe), OUT (default:
# $TMPDIR/sekisho-build/sekisho), GOOS/GOARCH as usual, NETNS=off to skip
# the network namespace in step 4.
#
# The build command between the BEGIN/END markers is the one in the
# top-level Dockerfile, flag for flag (deploy/dockerfile_test.go compares
# them). After building, it checks what the image would contain:
#   1. the binary is static and stripped of paths (go version -m, file);
#   2. `sekisho version` and the sekisho_build_info metric show that version;
#   3. the configuration baked into the image, and the example
#      configurations under deploy/, pass `sekisho check`;
#   4. `sekisho run` with the image's own configuration answers the image's
#      own HEALTHCHECK (`sekisho healthcheck`, default URL) and /readyz,
#      then drains and exits 0 on SIGTERM, after which healthcheck fails.
# Step 4 listens on the fixed ports 3128 and 9128 as the image does; so as
# not to collide with anything on this machine it runs in a fresh network
# namespace (unshare -n, as root). Where that is not allowed it runs the
# same binary on loopback ports the kernel picks and passes --url.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"

build_only=false
case "${1:-}" in
--build-only) build_only=true ;;
"") ;;
--smoke-inside-netns) ;; # internal: step 4 runs this script again inside the namespace
*) echo "usage: deploy/build.sh [--build-only]" >&2; exit 2 ;;
esac

VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
OUT="${OUT:-${TMPDIR:-/tmp}/sekisho-build/sekisho}"
export VERSION OUT

say() { printf 'build.sh: %s\n' "$*" >&2; }
fail() { printf 'build.sh: FAIL: %s\n' "$*" >&2; exit 1; }

# smoke CONFIG ADMIN: start `sekisho run --config CONFIG`, wait for its
# health check, check readiness and the version in /metrics, stop it with
# SIGTERM, check that it exits 0 and that healthcheck then says unhealthy.
# ADMIN "default" means the image's case: the admin listener is on
# 127.0.0.1:9128 and healthcheck runs without flags, exactly as the image's
# HEALTHCHECK does. ADMIN "auto" reads the address from the startup line
# (for admin_listen 127.0.0.1:0) and passes it with --url.
smoke() {
	local config=$1 mode=$2
	local dir; dir=$(mktemp -d)
	"$OUT" run --config "$config" >"$dir/audit.jsonl" 2>"$dir/sekisho.log" &
	local pid=$!
	local admin="127.0.0.1:9128" i
	if [ "$mode" = auto ]; then
		admin=""
		for i in $(seq 100); do
			admin=$(sed -n 's/.*proxy listening on .*, admin on \([0-9.:]*\)$/\1/p' "$dir/sekisho.log" | head -1)
			[ -n "$admin" ] && break
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		[ -n "$admin" ] || { cat "$dir/sekisho.log" >&2; kill "$pid" 2>/dev/null || true; fail "sekisho did not report its admin address"; }
	fi
	local hc=("$OUT" healthcheck)
	[ "$mode" = auto ] && hc+=(--url "http://$admin/healthz")
	for i in $(seq 50); do
		"${hc[@]}" >/dev/null 2>&1 && break
		kill -0 "$pid" 2>/dev/null || { cat "$dir/sekisho.log" >&2; fail "sekisho exited before it was healthy"; }
		sleep 0.2
	done
	"${hc[@]}" || { cat "$dir/sekisho.log" >&2; kill "$pid"; fail "healthcheck"; }
	"$OUT" healthcheck --url "http://$admin/readyz" || { kill "$pid"; fail "readiness"; }
	local metrics; metrics=$(curl -fsS --noproxy '*' "http://$admin/metrics")
	grep -qF "version=\"$VERSION\"" <<<"$(grep '^sekisho_build_info{' <<<"$metrics")" ||
		{ grep sekisho_build_info <<<"$metrics" >&2 || true; kill "$pid"; fail "sekisho_build_info does not carry version $VERSION"; }
	say "sekisho_build_info carries version $VERSION"
	kill -TERM "$pid"
	local rc=0; wait "$pid" || rc=$?
	[ "$rc" -eq 0 ] || { cat "$dir/sekisho.log" >&2; fail "sekisho exited $rc after SIGTERM (want 0)"; }
	say "SIGTERM: drained and exited 0"
	rc=0; "${hc[@]}" 2>"$dir/hc.err" || rc=$?
	[ "$rc" -eq 1 ] || fail "healthcheck of a stopped sekisho exited $rc (want 1)"
	say "healthcheck of the stopped sekisho: exit 1: $(cat "$dir/hc.err")"
	rm -rf "$dir"
}

if [ "${1:-}" = "--smoke-inside-netns" ]; then
	ip link set lo up
	smoke deploy/docker/sekisho.yaml default
	exit 0
fi

say "building sekisho $VERSION → $OUT"
mkdir -p "$(dirname "$OUT")"
# BEGIN build (the Dockerfile's build step; keep the two identical)
CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w -X main.version=${VERSION}" -o "$OUT" ./cmd/sekisho
# END build
$build_only && exit 0

say "1. build settings"
# (With -trimpath, Go does not record -ldflags; steps 2 and 4 check the
# version it stamped.)
settings=$(go version -m "$OUT")
for want in $'\tbuild\tCGO_ENABLED=0' $'\tbuild\t-trimpath=true'; do
	grep -qF -- "$want" <<<"$settings" || { echo "$settings" >&2; fail "binary lacks build setting: $want"; }
done
if grep -q $'\tbuild\tvcs' <<<"$settings"; then
	fail "binary carries VCS stamps: the image (built without .git) would differ"
fi
if command -v file >/dev/null 2>&1; then
	file "$OUT" | grep -q "statically linked" || fail "binary is not statically linked: $(file "$OUT")"
fi

say "2. version"
v=$("$OUT" version)
echo "$v"
[[ "$v" == "sekisho $VERSION "* ]] || fail "sekisho version does not print $VERSION"

say "3. configurations"
"$OUT" check --config deploy/docker/sekisho.yaml
"$OUT" check --config deploy/compose/sekisho/sekisho.yaml
"$OUT" check --config deploy/systemd/sekisho.yaml
# The Kubernetes configuration names a database that geoipupdate downloads
# in the pod; here only its syntax and the rules are checked.
k8s=$(mktemp -d)
sed '/^  database: /d' deploy/kubernetes/sekisho.yaml >"$k8s/sekisho.yaml"
"$OUT" check --config "$k8s/sekisho.yaml" --rules deploy/kubernetes/rules.yaml
rm -rf "$k8s"
"$OUT" check --rules deploy/firewall/sekisho-rules-doh.yaml

say "4. run and healthcheck"
if [ "${NETNS:-auto}" != off ] && [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
	say "in a fresh network namespace, on the image's ports 3128 and 9128"
	unshare -n "$0" --smoke-inside-netns
else
	say "no network namespace (NETNS=off, or not root): on loopback ports the kernel picks"
	cfg=$(mktemp)
	printf 'version: 1\nlisten: 127.0.0.1:0\nadmin_listen: 127.0.0.1:0\n' >"$cfg"
	smoke "$cfg" auto
	rm -f "$cfg"
fi
say "ok: $OUT ($VERSION) builds as the image does and passes its healthcheck"

#!/bin/sh
# Runs sekisho's load benchmark (issue 6) and writes BENCHMARKS.md at the
# repository root, with CPU and heap profiles of sekisho in
# $PROFILES (default /tmp/sekisho-bench-profiles). It installs nothing:
# Squid and tinyproxy are measured when they are installed (Debian:
# apt-get install squid-openssl tinyproxy).
#
# Run as root on an otherwise idle machine; it takes under 10 minutes.
#   cmd/sekisho-bench/run.sh              # the full run
#   cmd/sekisho-bench/run.sh --quick      # about a minute
# Extra arguments are passed to the program (go run ./cmd/sekisho-bench -h).
set -eu
cd "$(dirname "$0")/../.."
if [ "$(id -u)" -ne 0 ]; then
	echo "run.sh: run as root (RLIMIT_NOFILE, Squid's and tinyproxy's users)" >&2
	exit 1
fi
exec go run ./cmd/sekisho-bench --out BENCHMARKS.md --profile "${PROFILES:-/tmp/sekisho-bench-profiles}" "$@"

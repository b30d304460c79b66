#!/usr/bin/env bash
# Runs every fuzz target for a short time (FUZZTIME, default 10s).
# `go test -fuzz` takes one target in one package per run, so this lists
# (package, target) pairs from the *_test.go files.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-10s}
pairs=$(grep -rHoE --include='*_test.go' '^func Fuzz[A-Za-z0-9_]+\(' . | grep -v '^./.cache/' |
	sed -E 's#^(.*)/[^/]+_test\.go:func (Fuzz[A-Za-z0-9_]+)\($#\1 \2#' | sort -u)
[ -n "$pairs" ] || { echo "fuzz.sh: no fuzz targets found" >&2; exit 1; }
fail=0
while read -r pkg t; do
	echo "== fuzz $t in $pkg for $FUZZTIME"
	# A short minimisation budget: the default can spend the whole run
	# shrinking one large input.
	if ! go test -run '^$' -fuzz "^$t\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 100x "$pkg"; then
		echo "fuzz.sh: $t FAILED (the failing input is under $pkg/testdata/fuzz/$t)" >&2
		fail=1
	fi
done <<<"$pairs"
exit $fail

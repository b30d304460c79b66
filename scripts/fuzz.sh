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
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# run_one PKG TARGET: 0 passed, 1 failed, 2 the Go 1.26 fuzz coordinator's
# deadline race (golang/go#75804, fixed in Go 1.27): the run ends with a
# bare "context deadline exceeded" at -fuzztime and writes no failing
# input. Anything else that exits non-zero is a failure.
run_one() {
	# A short minimisation budget: the default can spend the whole run
	# shrinking one large input.
	if go test -run '^$' -fuzz "^$2\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 100x "$1" 2>&1 | tee "$log"; then
		return 0
	fi
	if grep -q 'context deadline exceeded' "$log" &&
		! grep -qE 'Failing input written to|panic:|_test\.go:[0-9]+:' "$log"; then
		return 2
	fi
	return 1
}
while read -r pkg t; do
	echo "== fuzz $t in $pkg for $FUZZTIME"
	rc=0
	run_one "$pkg" "$t" || rc=$?
	if ((rc == 2)); then
		echo "fuzz.sh: $t hit Go's fuzztime deadline race (golang/go#75804, no failing input): running it once more"
		rc=0
		run_one "$pkg" "$t" || rc=$?
	fi
	if ((rc != 0)); then
		echo "fuzz.sh: $t FAILED (the failing input is under $pkg/testdata/fuzz/$t)" >&2
		fail=1
	fi
done <<<"$pairs"
exit $fail

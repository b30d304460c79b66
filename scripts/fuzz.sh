#!/usr/bin/env bash
# Runs every fuzz target for a short time (FUZZTIME, default 10s).
# `go test -fuzz` takes one target per run, so this lists them.
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZTIME=${FUZZTIME:-10s}
targets=$(grep -rhoE --include='*_test.go' '^func (Fuzz[A-Za-z0-9_]+)' . | sed 's/^func //' | sort -u)
[ -n "$targets" ] || { echo "fuzz.sh: no fuzz targets found" >&2; exit 1; }
fail=0
for t in $targets; do
	pkg=$(grep -rlE --include='*_test.go' "^func $t\(" . | head -1 | xargs dirname)
	echo "== fuzz $t in $pkg for $FUZZTIME"
	if ! go test -run '^$' -fuzz "^$t\$" -fuzztime "$FUZZTIME" "$pkg"; then
		echo "fuzz.sh: $t FAILED (the failing input is under $pkg/testdata/fuzz/$t)" >&2
		fail=1
	fi
done
exit $fail

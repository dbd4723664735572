#!/usr/bin/env bash
# Runs `go test -v` with the given arguments, keeps the whole output in $GOTEST_LOG (default
# bin/gotest-<leg>.log), prints each package's result, every failure with the lines the tests logged,
# and one closing count: "<leg>: N passed, N failed, N skipped". Exits with go test's status.
#
#   testdata/gotest.sh LEG [go test arguments...]
set -uo pipefail
leg=$1
shift
log=${GOTEST_LOG:-bin/gotest-$leg.log}
mkdir -p "$(dirname "$log")"
start=$(date +%s)
go test -v "$@" >"$log" 2>&1
rc=$?
# Package results, build errors and panics, then each failed top-level test with everything it logged
# (from its "=== RUN" to its "--- FAIL").
grep -E '^(ok|FAIL|panic:|# )' "$log" || true
for name in $(sed -n 's/^--- FAIL: \([^ ]*\).*/\1/p' "$log"); do
	echo "----- $name"
	awk -v n="$name" '$0 == "=== RUN   " n {on = 1} on {print} on && index($0, "--- FAIL: " n " ") == 1 {exit}' "$log" | tail -n 200
done
passed=$(grep -cE '^\s*--- PASS' "$log")
failed=$(grep -cE '^\s*--- FAIL' "$log")
skipped=$(grep -cE '^\s*--- SKIP' "$log")
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
	failed=1 # a build error or a panic outside any test
	tail -n 40 "$log"
fi
echo "leg $leg took $(($(date +%s) - start)) s; full output in $log"
echo "$leg: $passed passed, $failed failed, $skipped skipped"
exit "$rc"

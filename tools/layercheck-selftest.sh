#!/usr/bin/env bash
# layercheck-selftest.sh - proves that tools/layercheck.sh can fail, so
# that its passing means something (ctest "layers_detects_violation").
#
#   tools/layercheck-selftest.sh OBJDIR LAYERS
#
# Given LAYERS upside down, every edge between two layers points up: the
# checker must exit 1 and name a layer violation.  Exit 2 or 127 (it could
# not run) or 1 without a violation fails this test, as does a missing
# OBJDIR not giving exit 2.
set -euo pipefail

fail() { echo "layercheck-selftest: $*" >&2; exit 1; }

[[ $# -eq 2 ]] || { echo "usage: $0 OBJDIR LAYERS" >&2; exit 2; }
check=$(dirname "$0")/layercheck.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

awk '!/^[ \t]*(#|$)/ { l[++n] = $0 } END { while (n) print l[n--] }' \
	"$2" >"$tmp/LAYERS"

rc=0
"$check" "$1" "$tmp/LAYERS" >"$tmp/out" 2>&1 || rc=$?
cat "$tmp/out"
[[ $rc -eq 1 ]] || fail "upside-down LAYERS: exit $rc, expected 1"
grep -q '^layer violation: ' "$tmp/out" ||
	fail "upside-down LAYERS: exit 1 but no layer violation" \
	    "(does $2 have two layers with an edge between them?)"

rc=0
"$check" "$tmp/no-such-dir" "$2" >/dev/null 2>&1 || rc=$?
[[ $rc -eq 2 ]] || fail "missing OBJDIR: exit $rc, expected 2"

echo "layercheck-selftest: ok (the checker fails on a violation)"

#!/usr/bin/env bash
# pagecheck.sh - no code assumes the page size is 4 KiB (issue 20 item 7:
# arm64 has 16 and 64 KiB pages).  The page size is hetmm_page_size(),
# read from the kernel at run time (src/page.c); a literal that is a 4 KiB
# page, its shift or mask, or a 4 KiB-page PMD (2 MiB, 512 pages of 4 KiB)
# in code is a bug on those machines.
#
#   tools/pagecheck.sh DIR|FILE ...     check C sources (*.c, *.h)
#   tools/pagecheck.sh --selftest       prove that the check can fail
#
# Comment lines are not code and are skipped.  A literal that is not a
# page (a read buffer of 4096 bytes, a count of pages) says so in a
# comment on its line: "pagecheck: why".
# Exit 0: clean; 1: a finding (each printed as file:line: text); 2: usage.
set -euo pipefail

# 4096, the 4 KiB mask, shifts by 12 or 21, 2 MiB written out, 512 pages,
# an order compared with 4 KiB's PMD or PUD order (9, 18).
PATTERN='\b4096\b|\b0x0*fff\b|(<<|>>)[[:space:]]*(12|21)\b|\b(2097152|0x200000)\b|\b2[uUlL]*[[:space:]]*<<[[:space:]]*20\b|\b512[[:space:]]*\*[[:space:]]*(PS|PAGE_SIZE|HETMM_PAGE_SIZE)\b|order[^;]*(==|!=)[[:space:]]*(9|18)\b'

check() {
	local out
	out=$(find "$@" -type f \( -name '*.c' -o -name '*.h' \) -print0 |
		xargs -0 -r grep -nHE "$PATTERN" |
		grep -vE '^[^:]+:[0-9]+:[[:space:]]*(/?\*|//)' |
		grep -v 'pagecheck:' || true)
	if [[ -n "$out" ]]; then
		echo "$out"
		echo "pagecheck: the lines above assume 4 KiB pages;" \
		     "use hetmm_page_size() / hetmm_pmd_size()" >&2
		return 1
	fi
	echo "pagecheck: no 4 KiB page assumed in $*"
}

selftest() {
	local tmp rc line
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' RETURN
	printf 'static char ok[64];\n/* 4096 in a comment */\n char buf[4096]; /* pagecheck: bytes */\n' \
		>"$tmp/clean.c"
	check "$tmp/clean.c" >/dev/null ||
		{ echo "pagecheck selftest: clean file flagged" >&2; return 1; }
	for line in 'char page[4096];' 'x = a & ~0xfff;' 'v = a >> 12;' \
		    'v = n << 12;' 'h = a << 21;' 'sz = 2097152;' \
		    'sz = 2u << 20;' 'al = 512 * PS;' 'sz = 2UL << 20;' \
		    'if (hetmm_range_order(e) == 9)'; do
		printf 'int f(void) {\n\t%s\n}\n' "$line" >"$tmp/bad.c"
		rc=0
		check "$tmp/bad.c" >/dev/null 2>&1 || rc=$?
		[[ $rc -eq 1 ]] ||
			{ echo "pagecheck selftest: '$line' not found" >&2; return 1; }
	done
	echo "pagecheck selftest: ok (each 4 KiB assumption is found)"
}

case "${1:-}" in
"") echo "usage: $0 DIR|FILE ... | --selftest" >&2; exit 2 ;;
--selftest) selftest ;;
*) check "$@" ;;
esac

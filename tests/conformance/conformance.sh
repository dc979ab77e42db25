#!/usr/bin/env bash
# conformance.sh BUILD_DIR [PRELOAD...]
#
# The kernel's own HMM selftest (tools/testing/selftests/vm/hmm-tests.c of
# Linux 6.1, as Debian ships it in linux-source-6.1), built unmodified and
# run with LD_PRELOAD=BUILD_DIR/libhetmm-dmirror.so, which serves the test
# driver's /dev/hmm_dmirror0..3 and /sys/kernel/debug/gup_test from hetmm.
#
# Only the files the test needs are taken from the tarball, into
# BUILD_DIR/conformance; nothing of the kernel's lands in the repository.
# Extra PRELOAD arguments go before the shim (a sanitizer's runtime).
#
# Run as root, hugetlbfs pages are reserved for the test's hugetlb cases
# and the old reservation put back afterwards.  The run is judged by
# judge.sh against known-failures (each with its reason; some only where
# a condition about this host holds, which a probe built here tells):
# exit 0 only when the harness ran to its end and its failures are
# exactly the expected ones; 77 when the sources can't be had (not root
# and the package is missing); else 1.
set -Eeuo pipefail
# A command that fails is a failed run (1), never a status of its own
# (77 would read as skipped).
on_err() { echo "conformance: line $1: $2 failed" >&2; exit 1; }
trap 'on_err $LINENO "$BASH_COMMAND"' ERR

build=$(cd "${1:?usage: conformance.sh BUILD_DIR [PRELOAD...]}" && pwd)
shift
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
known="$here/known-failures"
judge="$here/judge.sh"
preload=("$@")
shim="$build/libhetmm-dmirror.so"
pkg=linux-source-6.1
tarball=/usr/src/linux-source-6.1.tar.xz
top=linux-source-6.1
out="$build/conformance"
src="$out/src"
members=(
	"$top/tools/testing/selftests/vm/hmm-tests.c"
	"$top/tools/testing/selftests/kselftest_harness.h"
	"$top/tools/testing/selftests/kselftest.h"
	"$top/lib/test_hmm_uapi.h"
	"$top/mm/gup_test.h"
)

[ -f "$shim" ] || { echo "conformance: $shim not built" >&2; exit 1; }

if [ ! -f "$tarball" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "conformance: $tarball missing; as root: apt-get install $pkg" >&2
		exit 77
	fi
	echo "conformance: installing $pkg"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq "$pkg" >/dev/null 2>&1 ||
		{ apt-get update -qq && apt-get install -y -qq "$pkg" >/dev/null; }
fi

# Extract once per tarball.
stamp="$out/.extracted"
if [ ! -f "$stamp" ] || [ "$tarball" -nt "$stamp" ]; then
	rm -rf "$src"
	mkdir -p "$src"
	tar -xJf "$tarball" -C "$src" "${members[@]}"
	touch "$stamp"
fi

kroot="$src/$top"
bin="$out/hmm-tests"
test_c="$kroot/tools/testing/selftests/vm/hmm-tests.c"
if [ ! -x "$bin" ] || [ "$test_c" -nt "$bin" ]; then
	# As the kernel's selftests Makefile builds it: its relative includes
	# resolve against the kernel tree's root.
	${CC:-cc} -Wall -I "$kroot" -o "$bin" "$test_c" -lrt -lpthread \
		2> "$out/build.log" || { cat "$out/build.log" >&2; exit 1; }
fi

# The conditions known-failures names, each told by its probe
# ($here/NAME.c, built here; it prints yes or no).
conds=()
names=$("$judge" --conditions "$known")
for c in $names; do
	probe="$out/$c"
	if ! ${CC:-cc} -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror \
		-I "$root/tests" -I "$root/include" -o "$probe" "$here/$c.c" \
		2> "$out/$c.build.log"; then
		cat "$out/$c.build.log" >&2
		echo "conformance: the probe for condition $c does not build" >&2
		exit 1
	fi
	v=$("$probe") || { echo "conformance: probe $c failed" >&2; exit 1; }
	case $v in
	yes | no) ;;
	*) echo "conformance: probe $c said '$v', not yes or no" >&2; exit 1 ;;
	esac
	echo "conformance: condition $c: $v"
	conds+=(--cond "$c=$v")
done

# Huge pages for anon_write_hugetlbfs and compound (2 MiB each).
hp=/proc/sys/vm/nr_hugepages
want=4
old=
if [ -w "$hp" ]; then
	old=$(cat "$hp")
	if [ "$old" -lt "$want" ]; then
		echo "$want" > "$hp" 2>/dev/null || true
	fi
fi
restore() { if [ -n "$old" ]; then echo "$old" > "$hp" 2>/dev/null || true; fi; }
trap restore EXIT
echo "conformance: hugetlb pages reserved: $(cat $hp 2>/dev/null || echo '?')"

log="$out/hmm-tests.log"
pre=$(IFS=:; echo "${preload[*]:+${preload[*]}:}$shim")
# A failed check makes the 6.1 harness repeat the fixture's teardown, and
# its failing close, until the test's timeout: millions of equal lines,
# kept here as one and a count.
set +e
trap - ERR
(cd "$out" && LD_PRELOAD="$pre" "$bin") 2>&1 | awk '
	$0 == prev { n++; next }
	{ if (n) print "# (last line repeated " n " more times)"; n = 0
	  prev = $0; print; fflush() }
	END { if (n) print "# (last line repeated " n " more times)" }' > "$log"
status=("${PIPESTATUS[@]}")
trap 'on_err $LINENO "$BASH_COMMAND"' ERR
set -e
rc=${status[0]}
if [ "${status[1]}" -ne 0 ]; then
	echo "conformance: writing the log failed (awk exited ${status[1]})" >&2
	exit 1
fi
echo "conformance: hmm-tests exited $rc; full log: $log"

# The verdict: the harness's own lines, the first report of each failed
# check, and the judgement against the known failures.
"$judge" "${conds[@]+"${conds[@]}"}" "$known" "$log" "$rc" || exit 1

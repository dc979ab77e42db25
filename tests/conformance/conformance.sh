#!/usr/bin/env bash
# conformance.sh [--prepare] BUILD_DIR SUITE [PRELOAD...]
#
# One of the kernel's own selftests, as Debian ships it in linux-source-V,
# built unmodified and run with LD_PRELOAD=BUILD_DIR/libhetmm-dmirror.so,
# which serves the test driver's /dev/hmm_dmirror0..3 and
# /sys/kernel/debug/gup_test from hetmm.  The suites (SUITE):
#
#   hmm-6.1             tools/testing/selftests/vm/hmm-tests.c of 6.1
#   hmm-6.12            tools/testing/selftests/mm/hmm-tests.c of 6.12
#   gup_longterm-6.12   tools/testing/selftests/mm/gup_longterm.c of 6.12
#
# Only the files the tests need are taken from the package, into
# BUILD_DIR/conformance/src-V; nothing of the kernel's lands in the
# repository.  The package's tarball is used where linux-source-V is
# installed (/usr/src/linux-source-V.tar.xz); else the package is
# downloaded (never installed: tools/kernels/apt.sh's private lists of
# bookworm, -updates, -security and -backports, in BUILD_DIR/kernels/apt),
# the files taken and the .deb deleted.  The 6.12 suites are built as the
# kernel's Makefile builds them, against 6.12's uapi headers: Debian's
# linux-libc-dev 6.12 (bookworm-backports), likewise downloaded and
# unpacked, since Debian 12's own are 6.1's.  A machine where a package
# can be neither found installed nor downloaded fails the suite (exit 1),
# saying so: the suite is part of `make test`, and a skip would hide it.
# Once taken, the files are kept, so a later run needs no network (the
# guests of tools/kernels/run.sh have none: it runs --prepare on the host,
# which takes the files and builds the test, and no more).
#
# Extra PRELOAD arguments go before the shim (a sanitizer's runtime).
#
# Run as root, hugetlbfs pages are reserved for the tests' hugetlb cases
# and the old reservation put back afterwards.  The run is judged by
# judge.sh against known-failures.SUITE (each with its reason; some only
# where a condition about this host holds, which a probe built here
# tells): exit 0 only when the harness ran to its end and its failures
# are exactly the expected ones, else 1.
set -Eeuo pipefail
# A command that fails is a failed run (1), never a status of its own.
on_err() { echo "conformance: line $1: $2 failed" >&2; exit 1; }
trap 'on_err $LINENO "$BASH_COMMAND"' ERR
say() { echo "conformance: $*"; }
die() { echo "conformance: FAILED: $*" >&2; exit 1; }
usage() { echo "usage: conformance.sh [--prepare] BUILD_DIR SUITE [PRELOAD...]" >&2; exit 2; }

prepare_only=
if [ "${1:-}" = --prepare ]; then prepare_only=1; shift; fi
[ $# -ge 2 ] || usage
build=$(cd "$1" && pwd)
suite=$2
shift 2
preload=("$@")
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
judge="$here/judge.sh"
known="$here/known-failures.$suite"
shim="$build/libhetmm-dmirror.so"
cc=${CC:-cc}

# The suite: its program, the kernel series, where the series keeps its
# mm selftests, and how its Makefile builds them.
prog=${suite%-*}
ver=${suite##*-}
case $suite in
hmm-6.1)
	sd=tools/testing/selftests/vm
	cflags=(-Wall)
	extra=()
	;;
hmm-6.12 | gup_longterm-6.12)
	sd=tools/testing/selftests/mm
	cflags=(-Wall -O2 -U_FORTIFY_SOURCE)
	extra=("$sd/vm_util.c" "$sd/thp_settings.c")
	;;
*) echo "conformance: unknown suite $suite (hmm-6.1, hmm-6.12, gup_longterm-6.12)" >&2; exit 2 ;;
esac
case $prog in
hmm) main=$sd/hmm-tests.c ;;
gup_longterm) main=$sd/gup_longterm.c ;;
esac
# Every file any suite of the series needs.
members=(tools/testing/selftests/kselftest_harness.h
	tools/testing/selftests/kselftest.h
	lib/test_hmm_uapi.h mm/gup_test.h "$sd/hmm-tests.c")
if [ "$ver" = 6.12 ]; then
	members+=("$sd/gup_longterm.c" "$sd/vm_util.c" "$sd/vm_util.h"
		"$sd/thp_settings.c" "$sd/thp_settings.h" "$sd/check_config.sh")
fi

[ -f "$shim" ] || die "$shim not built"
[ -r "$known" ] || die "no list of known failures for $suite ($known)"
out="$build/conformance"
work="$out/$suite"
mkdir -p "$work"
exec 9> "$out/.lock"
flock 9

# ---------------------------------------------------------- the sources
apt_ready=
apt_setup() {
	[ -z "$apt_ready" ] || return 0
	. "$root/tools/kernels/apt.sh"
	debian_apt_init "$build/kernels/apt"
	say "updating the package lists of bookworm{,-updates,-security,-backports} (private to $build/kernels/apt)"
	debian_apt_update "$out/apt-update.log" ||
		die "apt-get update failed, and there are no earlier lists (see" \
			"$out/apt-update.log): the suite needs Debian's mirrors (or" \
			"DEBIAN_MIRROR) for the packages it can't find installed"
	apt_ready=1
}

# fetch_deb PKG VERSION_PREFIX: the newest such .deb, downloaded into
# $out/debs; its path printed.  After apt_setup.
fetch_deb() {
	local pkg=$1 prefix=$2 v deb
	v=$(debian_apt_newest "$pkg" "$prefix")
	[ -n "$v" ] || die "no $pkg $prefix* in the lists of Debian's bookworm suites" \
		"(see $out/apt-update.log): this suite needs it installed or downloadable"
	echo "conformance: downloading $pkg $v" >&2
	deb=$(debian_apt_download "$out/debs" "$pkg" "$v") ||
		die "downloading $pkg $v failed: this suite needs it installed or" \
			"downloadable (network to Debian's mirrors, or DEBIAN_MIRROR)"
	echo "$deb"
}

# The kernel tree's files, taken once (again when the installed tarball
# is newer than what was taken).
src="$out/src-$ver"
top=linux-source-$ver
kroot="$src/$top"
tarball=/usr/src/linux-source-$ver.tar.xz
take() { tar -xJ -C "$src" "${members[@]/#/$top/}"; }
if [ -f "$tarball" ]; then
	if [ ! -f "$src/.taken" ] || [ "$tarball" -nt "$src/.taken" ]; then
		rm -rf "$src" && mkdir -p "$src"
		take < "$tarball"
		echo "$tarball" > "$src/.taken"
	fi
elif [ ! -f "$src/.taken" ]; then
	apt_setup
	deb=$(fetch_deb "linux-source-$ver" "$ver.")
	rm -rf "$src" && mkdir -p "$src"
	dpkg-deb --fsys-tarfile "$deb" | tar -xO "./usr/src/$top.tar.xz" | take
	echo "${deb##*/}" > "$src/.taken"
	rm -f "$deb"
fi

# The uapi headers the series' tests are built against (KHDR_INCLUDES):
# the system's for 6.1, Debian 12's own.
hdr=()
if [ "$ver" != 6.1 ]; then
	h="$out/uapi-$ver"
	if [ ! -f "$h/.taken" ]; then
		apt_setup
		deb=$(fetch_deb linux-libc-dev "$ver.")
		rm -rf "$h" && mkdir -p "$h"
		dpkg-deb -x "$deb" "$h"
		echo "${deb##*/}" > "$h/.taken"
		rm -f "$deb"
	fi
	arch=$($cc -print-multiarch)
	hdr=(-isystem "$h/usr/include" -isystem "$h/usr/include/$arch")
fi

# ------------------------------------------------------------ the build
bin="$work/$(basename "$main" .c)"
if [ ! -x "$bin" ] || [ "$kroot/$main" -nt "$bin" ]; then
	libs=()
	if [ "$prog" = gup_longterm ]; then
		# The Makefile's probe for liburing, as it runs it, and the
		# library it then links (local_config.mk: LDLIBS += -luring
		# where liburing-dev is installed).
		(cd "$kroot/$sd" && sh ./check_config.sh "$cc" > /dev/null)
		if grep -q -- -luring "$kroot/$sd/local_config.mk" 2>/dev/null; then
			libs+=(-luring)
		fi
	fi
	# As the selftests Makefile builds them: relative includes resolve
	# against the kernel tree's root, each test linked with the helpers.
	(cd "$kroot/$sd" && $cc "${cflags[@]}" -I "$kroot" "${hdr[@]}" \
		-o "$bin" "$kroot/$main" "${extra[@]/#/$kroot/}" "${libs[@]}" \
		-lrt -lpthread -lm) \
		2> "$work/build.log" || { cat "$work/build.log" >&2; die "$main does not build"; }
fi
if [ -n "$prepare_only" ]; then
	say "$suite prepared: $bin"
	exit 0
fi

# ------------------------------------------------------- the conditions
# The conditions known-failures.SUITE names, each told by its probe
# ($here/NAME.c, built here; it prints yes or no).
conds=()
names=$("$judge" --conditions "$known")
for c in $names; do
	probe="$out/$c"
	if ! $cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror \
		-I "$root/tests" -I "$root/include" -o "$probe" "$here/$c.c" \
		2> "$out/$c.build.log"; then
		cat "$out/$c.build.log" >&2
		die "the probe for condition $c does not build"
	fi
	v=$("$probe") || die "probe $c failed"
	case $v in
	yes | no) ;;
	*) die "probe $c said '$v', not yes or no" ;;
	esac
	say "condition $c: $v"
	conds+=(--cond "$c=$v")
done

# -------------------------------------------------------------- the run
# Huge pages for the hugetlb cases (2 MiB each).
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
say "$suite: hugetlb pages reserved: $(cat $hp 2>/dev/null || echo '?')"

log="$work/harness.log"
pre=$(IFS=:; echo "${preload[*]:+${preload[*]}:}$shim")
# A failed check makes the 6.1 harness repeat the fixture's teardown, and
# its failing close, until the test's timeout: millions of equal lines,
# kept here as one and a count.
set +e
trap - ERR
(cd "$work" && LD_PRELOAD="$pre" "$bin") 2>&1 | awk '
	$0 == prev { n++; next }
	{ if (n) print "# (last line repeated " n " more times)"; n = 0
	  prev = $0; print; fflush() }
	END { if (n) print "# (last line repeated " n " more times)" }' > "$log"
status=("${PIPESTATUS[@]}")
trap 'on_err $LINENO "$BASH_COMMAND"' ERR
set -e
rc=${status[0]}
[ "${status[1]}" -eq 0 ] || die "writing the log failed (awk exited ${status[1]})"
say "$suite: ${main##*/} exited $rc; full log: $log"

# The verdict: the harness's own lines, the first report of each failed
# check, and the judgement against the known failures.  gup_longterm
# reports with kselftest.h's plain lines, each result named by the
# "[RUN]" line before it.
style=()
[ "$prog" = hmm ] || style=(--ksft)
"$judge" "${style[@]+"${style[@]}"}" "${conds[@]+"${conds[@]}"}" "$known" "$log" "$rc" || exit 1

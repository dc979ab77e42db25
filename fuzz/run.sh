#!/bin/sh
# SPDX-License-Identifier: MIT
#
# fuzz/run.sh - build the fuzz targets with clang (libFuzzer, ASan, UBSan)
# and run each for a bounded time.  `make fuzz` runs it.
#
#   fuzz/run.sh [build|run|merge|replay] [target...]
#
#   build   configure $FUZZ_BUILD with the project's own CMake (clang,
#           -fsanitize=fuzzer-no-link,address,undefined), build the library,
#           link the targets
#   run     (default) build, replay the known findings, then fuzz each
#           target for FUZZ_SECONDS from fuzz/corpus/<target> (read only)
#           into $FUZZ_BUILD/corpus/<target>; exit non-zero if a known
#           finding still reproduces or a crash, leak, timeout or OOM
#           artifact appeared ($FUZZ_BUILD/artifacts/<target>/)
#   merge   minimize fuzz/corpus/<target> plus what runs found into
#           fuzz/corpus/<target> (libFuzzer -merge=1)
#   replay  run every input of fuzz/corpus/<target> and of
#           fuzz/corpus/crashes/<target> once
#
# Environment: FUZZ_SECONDS (60), FUZZ_BUILD (build-fuzz), FUZZ_TIMEOUT
# (seconds per input, 30), FUZZ_RSS_MB (4096), FUZZ_NICE (10), FUZZ_ARGS
# (more libFuzzer flags), FUZZ_AVOID (the known findings the fuzzing and
# merging steer clear of: "all" by default, "" for none; never for the
# replay of the findings; see fuzz/FINDINGS.md), CC (clang).
set -eu

cd "$(dirname "$0")/.."
ROOT=$(pwd)
B=${FUZZ_BUILD:-build-fuzz}
SECONDS_PER=${FUZZ_SECONDS:-60}
TIMEOUT=${FUZZ_TIMEOUT:-30}
RSS=${FUZZ_RSS_MB:-4096}
NICE=${FUZZ_NICE:-10}
CC=${CC:-clang}
ALL_TARGETS="fuzz_shim fuzz_api"

AVOID=${FUZZ_AVOID-all}

cmd=${1:-run}
[ $# -gt 0 ] && shift
targets=${*:-$ALL_TARGETS}

export ASAN_OPTIONS="${ASAN_OPTIONS:-allocator_may_return_null=1:detect_leaks=1:handle_abort=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"
# Reports name files and lines.
command -v llvm-symbolizer >/dev/null 2>&1 &&
	export ASAN_SYMBOLIZER_PATH="$(command -v llvm-symbolizer)"

SAN="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
CFLAGS="-std=c11 -D_GNU_SOURCE -O1 -g -Wall -Wextra -Werror $SAN"

build() {
	if [ ! -f "$B/CMakeCache.txt" ]; then
		cmake -S . -B "$B" -DCMAKE_C_COMPILER="$CC" \
			-DCMAKE_BUILD_TYPE=RelWithDebInfo \
			-DHETMM_SANITIZE=address,undefined \
			-DHETMM_CONFORMANCE_TEST=OFF \
			"-DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link -fno-sanitize-recover=all" \
			>/dev/null
	fi
	nice -n "$NICE" cmake --build "$B" --target hetmm_static hetmm_dmirror \
		-j 2 >/dev/null
	# fuzz_shim links the shim itself, libhetmm-dmirror.so as CMake
	# builds it (the library compiled once more with the shim's own
	# allocator), instrumented: its open/close/ioctl/mmap come before
	# libc's, as under LD_PRELOAD.
	nice -n "$NICE" $CC $CFLAGS -fsanitize=fuzzer -Iinclude -Isrc/shim \
		-o "$B/fuzz_shim" fuzz/fuzz_shim.c fuzz/world.c \
		-L"$B" -Wl,-rpath,"$ROOT/$B" -Wl,--no-as-needed -lhetmm-dmirror \
		-lpthread -ldl
	# fuzz_api links the library's static archive: its allocations are
	# ASan's.
	nice -n "$NICE" $CC $CFLAGS -fsanitize=fuzzer -Iinclude \
		-o "$B/fuzz_api" fuzz/fuzz_api.c fuzz/world.c "$B/libhetmm.a" \
		-lpthread
}

fuzz_flags="-timeout=$TIMEOUT -rss_limit_mb=$RSS -malloc_limit_mb=1048576 -print_final_stats=1"

# Every known finding of target t, each in a process of its own.  Prints
# the ones that still fail; returns how many.
replay_known() {
	t=$1
	n=0
	for f in fuzz/corpus/crashes/"$t"/*; do
		[ -f "$f" ] || continue
		if env -u FUZZ_AVOID nice -n "$NICE" "$B/$t" $fuzz_flags \
			"$f" >"$B/replay.log" 2>&1; then
			echo "  fixed:     $f"
		else
			echo "  REPRODUCES: $f"
			grep -m3 -E "ORACLE FAILURE|ERROR: |SUMMARY|timeout" \
				"$B/replay.log" | sed 's/^/      /' || true
			n=$((n + 1))
		fi
	done
	return $n
}

run() {
	build
	fail=0
	for t in $targets; do
		echo "== $t: known findings (fuzz/corpus/crashes/$t)"
		replay_known "$t" || fail=1
		mkdir -p "$B/corpus/$t" "$B/artifacts/$t" "fuzz/corpus/$t"
		before=$(ls "$B/artifacts/$t" | wc -l)
		echo "== $t: fuzzing for $SECONDS_PER s (log: $B/$t.log)"
		rc=0
		FUZZ_AVOID=$AVOID nice -n "$NICE" "$B/$t" $fuzz_flags \
			-max_total_time="$SECONDS_PER" \
			-artifact_prefix="$B/artifacts/$t/" \
			${FUZZ_ARGS:-} \
			"$B/corpus/$t" "fuzz/corpus/$t" >"$B/$t.log" 2>&1 ||
			rc=$?
		grep -E "^stat::|cov:" "$B/$t.log" | tail -n 12 || true
		after=$(ls "$B/artifacts/$t" | wc -l)
		if [ "$rc" -ne 0 ] || [ "$after" -ne "$before" ]; then
			echo "== $t: FAILED (exit $rc); new artifacts:"
			ls -t "$B/artifacts/$t" | head -n $((after - before + 1))
			grep -m5 -E "ORACLE FAILURE|ERROR: |SUMMARY" \
				"$B/$t.log" || true
			fail=1
		fi
	done
	return $fail
}

merge() {
	build
	for t in $targets; do
		mkdir -p "$B/corpus/$t" "fuzz/corpus/$t"
		rm -rf "$B/merged-$t"
		mkdir -p "$B/merged-$t"
		FUZZ_AVOID=$AVOID nice -n "$NICE" "$B/$t" $fuzz_flags \
			-merge=1 "$B/merged-$t" \
			"fuzz/corpus/$t" "$B/corpus/$t" >"$B/merge-$t.log" 2>&1
		rm -f "fuzz/corpus/$t"/*
		cp "$B/merged-$t"/* "fuzz/corpus/$t"/ 2>/dev/null || true
		echo "== $t: $(ls "fuzz/corpus/$t" | wc -l) inputs," \
			"$(du -sk "fuzz/corpus/$t" | cut -f1) KiB"
	done
}

replay() {
	build
	fail=0
	for t in $targets; do
		echo "== $t: corpus"
		FUZZ_AVOID=$AVOID nice -n "$NICE" "$B/$t" $fuzz_flags -runs=0 \
			"fuzz/corpus/$t" \
			>"$B/replay-$t.log" 2>&1 || { echo "  FAILED"; fail=1; }
		echo "== $t: known findings"
		replay_known "$t" || fail=1
	done
	return $fail
}

case $cmd in
build) build ;;
run) run ;;
merge) merge ;;
replay) replay ;;
*) echo "usage: $0 [build|run|merge|replay] [target...]" >&2; exit 2 ;;
esac

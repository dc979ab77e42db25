#!/usr/bin/env bash
# probe-cost.sh [BUILD_DIR] [ROUNDS]
#
# What hetmm's USDT probes (src/trace.h) cost on the fault path: the
# benchmark's single-page fault latency (`hetmm bench --latency`, the
# same_cpu placement) of BUILD_DIR's hetmm, built with the probes, against
# the same source built without them (-DHETMM_USDT=OFF, into
# BUILD_DIR-noprobes), in ROUNDS rounds (default 6) that alternate which
# goes first.  Each run times the bare userfaultfd round trip too, which
# both builds share: the ratio hetmm / bare cancels most of what load on
# the machine does to both.  With TRACED=1, a third run each round has
# bpftrace attached to every probe: the cost when someone traces.
#
# Prints each round and the medians; `make bench-probes` runs it.
set -euo pipefail
build=$(cd "${1:-build}" && pwd)
rounds=${2:-6}
src=$(cd "$(dirname "$0")/.." && pwd)
off="$build-noprobes"
args=(bench --latency --json --reps 3 --samples 1000)
fail() { echo "probe-cost: $*" >&2; exit 1; }

readelf -n "$build/hetmm" | grep 'NT_STAPSDT' > /dev/null ||
	fail "$build/hetmm has no probes (no sys/sdt.h? tools/deps.sh)"
cmake -S "$src" -B "$off" -DHETMM_USDT=OFF -DHETMM_CONFORMANCE_TEST=OFF \
	> /dev/null
cmake --build "$off" --target hetmm_cli -j 2 > /dev/null
! readelf -n "$off/hetmm" | grep 'NT_STAPSDT' > /dev/null ||
	fail "$off/hetmm has probes"

# same_cpu median and bare median (ns) of one run's JSON.
figures() {
	sed -n 's/.*"fault_latency_ns_same_cpu": {"median": \([0-9]*\),.*"raw_median": \([0-9]*\),.*/\1 \2/p'
}
run() {
	case "$1" in
	on) "$build/hetmm" "${args[@]}" 2>/dev/null | figures ;;
	off) "$off/hetmm" "${args[@]}" 2>/dev/null | figures ;;
	traced)
		bpftrace -q -e "usdt:$build/hetmm:hetmm:* { @n = count(); }" \
			-c "$build/hetmm ${args[*]}" 2>/dev/null | figures ;;
	esac
}
kinds=(on off)
[ "${TRACED:-0}" = 1 ] && kinds+=(traced)

declare -A lat ratio
for ((r = 1; r <= rounds; r++)); do
	order=("${kinds[@]}")
	((r % 2)) || order=("${kinds[1]}" "${kinds[0]}" "${kinds[@]:2}")
	line="round $r:"
	for k in "${order[@]}"; do
		read -r med raw < <(run "$k") || fail "no figures from the $k run"
		lat[$k]+="$med "
		ratio[$k]+="$(awk -v a="$med" -v b="$raw" 'BEGIN { printf "%.4f", a / b }') "
		line+=" $k ${med} ns (bare ${raw} ns)"
	done
	echo "$line"
done

median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END {
	print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
for k in "${kinds[@]}"; do
	printf '%-7s median fault latency %8s ns, hetmm / bare round trip %s\n' \
		"$k" "$(median <<<"${lat[$k]}")" "$(median <<<"${ratio[$k]}")"
done
m_on=$(median <<<"${ratio[on]}")
m_off=$(median <<<"${ratio[off]}")
awk -v a="$m_on" -v b="$m_off" 'BEGIN {
	printf "probes compiled in, not attached: %+.1f%% on the fault path (ratio to the bare round trip, medians of the rounds)\n", (a / b - 1) * 100 }'

#!/usr/bin/env bash
# run.sh BUILD_DIR [KERNEL...]    (`make test-kernels`, KERNELS="6.1 6.12")
#
# The test suite of BUILD_DIR (as `make test` runs it: ctest, so the
# conformance test too) under Debian's own kernels, each booted in qemu
# (software emulation, no KVM) over this machine's root, mounted read-only
# in the guest through virtio-9p.  A KERNEL is a series, such as 6.1 or
# 6.12: the newest linux-image-amd64 of that series in bookworm,
# bookworm-updates, bookworm-security or bookworm-backports, whose image
# package is downloaded (never installed); or an image package's name
# (linux-image-6.1.0-50-amd64).
#
# Everything lands in BUILD_DIR/kernels: a private apt state (lists of the
# four suites above; the host's apt configuration is not touched), the
# packages, their extracted trees, each guest's initramfs (busybox, the
# 9p/virtio modules, tools/kernels/init.sh as /init) and its logs:
#   console.log  the guest's kernel messages (first serial port)
#   results.log  init.sh's markers and ctest's output (second serial port)
#
# Prints `kernel VERSION: N/M tests passed` for each kernel, the failed
# tests' names and output.  Exit status 0 only if every kernel booted,
# ran every test of BUILD_DIR to the end marker, and every test passed.
#
# Knobs (environment): KERNELS_JOBS (ctest -j in the guest, 2),
# KERNELS_LIMIT (seconds the guest's ctest run may take, 2700),
# KERNELS_CTEST_ARGS (more ctest arguments, e.g. "-R test_stress", after
# "-LE packaging"; split
# at blanks, quotes kept as they are: "-R test_mirror|conformance", not
# '-R "test_mirror|conformance"', whose quotes end up in the pattern),
# KERNELS_ENV (VAR=value words for the tests' environment in the guest,
# e.g. "HETMM_STRESS_SECONDS=30"), KERNELS_TIMEOUT_SCALE (a whole factor
# for every test's ctest TIMEOUT in the guest; 1, as `make test` has them),
# KERNELS_BENCH (arguments for `hetmm bench`: when set, each guest runs
# the benchmark instead of the tests, and its JSON lands in
# BUILD_DIR/kernels/<package>/bench.json; `make bench-kernels`),
# KERNELS_THP (the guest's transparent_hugepage= boot setting: always,
# Debian's own default, madvise or never; always),
# KERNELS_SMP (2), KERNELS_MEM (12G: test_shim puts 4.25 GiB on its device, which on a kernel without UFFDIO_MOVE is copied, not moved: about 8.5 GiB at once), KERNELS_CPU (qemu's -cpu, max), DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR.
set -euo pipefail

log() { echo "test-kernels: $*"; }
fail() { echo "test-kernels: $*" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)
tree=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: run.sh BUILD_DIR [KERNEL...]}" && pwd)
shift
if [ "$#" -gt 0 ]; then kernels=("$@"); else kernels=(6.1 6.12); fi
work="$build/kernels"
jobs=${KERNELS_JOBS:-2}
limit=${KERNELS_LIMIT:-2700}
smp=${KERNELS_SMP:-2}
mem=${KERNELS_MEM:-12G}
cpu=${KERNELS_CPU:-max}
thp=${KERNELS_THP:-always}
# Tests labelled "packaging" (install, subproject: hetmm built and
# installed as a user would, nothing a kernel changes; a build under
# software emulation would take a quarter of an hour) stay on the host.
ctest_args="-LE packaging ${KERNELS_CTEST_ARGS:-}"
test_env=${KERNELS_ENV:-}
scale=${KERNELS_TIMEOUT_SCALE:-1}
bench=${KERNELS_BENCH:-}
[[ $scale =~ ^[1-9][0-9]*$ ]] || fail "KERNELS_TIMEOUT_SCALE must be a whole number >= 1"
[[ $thp =~ ^(always|madvise|never)$ ]] || fail "KERNELS_THP must be always, madvise or never"


case "$tree$build" in *"'"* | *' '*) fail "the source and build directories' paths must have no quotes or spaces: $tree, $build" ;; esac
case "$ctest_args$test_env$bench" in *"'"*) fail "KERNELS_CTEST_ARGS, KERNELS_ENV and KERNELS_BENCH must have no single quotes" ;; esac
[ -f "$build/CTestTestfile.cmake" ] || fail "$build is not a configured build (make build first)"

# ---------------------------------------------------------------- host tools
# Installed with apt-get, and only those missing.
pkgs=(qemu-system-x86 busybox-static cpio gzip xz-utils zstd kmod)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	[ "$(id -u)" = 0 ] || fail "missing packages, install as root: apt-get install ${missing[*]}"
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 ||
		{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
fi
command -v qemu-system-x86_64 >/dev/null || fail "qemu-system-x86_64 not found"
busybox=/bin/busybox   # busybox-static's

# ------------------------------------------------------ private apt state
# Debian's bookworm suites, backports included, in lists of our own
# (tools/kernels/apt.sh): /etc/apt and /var/lib/apt/lists stay as they were.
. "$here/apt.sh"
debian_apt_init "$work/apt"
log "updating the package lists of bookworm{,-updates,-security,-backports} (private to $work/apt)"
if ! debian_apt_update "$work/apt-update.log"; then
	cat "$work/apt-update.log" >&2
	fail "apt-get update failed"
fi

# The conformance tests take the kernel's selftests from Debian's
# packages, which the guest can't fetch (no network): the host takes the
# files and builds each suite's test, for the guest's copy of the build.
for suite in $( (cd "$build" && ctest -N) | sed -n 's/^ *Test *#[0-9]*: conformance-//p'); do
	log "conformance suite $suite: preparing"
	"$tree/tests/conformance/conformance.sh" --prepare "$build" "$suite" | sed 's/^/  /'
done

# The image package for a series: what the newest linux-image-amd64 of
# that series depends on.
image_for() {
	local series=$1 ver
	ver=$(apt-cache "${aptopts[@]}" show linux-image-amd64 2>/dev/null |
		sed -n 's/^Version: //p' | grep -E "^${series//./\\.}\.[0-9]" |
		sort -V | tail -1) || true
	[ -n "$ver" ] || return 1
	apt-cache "${aptopts[@]}" show "linux-image-amd64=$ver" |
		sed -n 's/^Depends: *\(linux-image-[^ ,]*\).*/\1/p' | head -1
}

# Modules, with their dependencies first, from modules.dep; built-in ones
# are left out.  $1 = the extracted lib/modules/VERSION, then module names.
declare -A seen
order=()
mod_visit() {
	local dir=$1 path=$2 deps d
	[ -z "${seen[$path]:-}" ] || return 0
	seen[$path]=1
	deps=$(awk -v p="$path" -F': *' '$1 == p { print $2 }' "$dir/modules.dep")
	for d in $deps; do mod_visit "$dir" "$d"; done
	order+=("$path")
}
mod_resolve() {
	local dir=$1 name path
	shift
	seen=()
	order=()
	for name in "$@"; do
		path=$(awk -F: -v n="$name" '{ f = $1; sub(/.*\//, "", f); sub(/\.ko(\.(xz|zst|gz))?$/, "", f);
			gsub(/-/, "_", f); if (f == n) { print $1; exit } }' "$dir/modules.dep")
		if [ -z "$path" ]; then
			grep -qE "/${name//_/[-_]}\.ko$" "$dir/modules.builtin" && continue
			fail "module $name neither in modules.dep nor built in ($dir)"
		fi
		mod_visit "$dir" "$path"
	done
}

# ------------------------------------------------------------ one kernel
# shellcheck disable=SC2086
expected=$(cd "$build" && ctest -N $ctest_args | sed -n 's/^Total Tests: *//p')
[ -n "$expected" ] && [ "$expected" -gt 0 ] || fail "ctest -N in $build lists no tests"

declare -a summary=()
status=0

# run_kernel KERNEL: prepare, boot, judge.  Appends its lines to summary
# and sets status=1 on any failure; a failing preparation step ends the
# script (set -e).
run_kernel() {
	local k=$1 pkg deb kdir x ver vmlinuz mods ird m src dst rc t0 t1
	if [[ $k == linux-image-* ]]; then pkg=$k; else
		pkg=$(image_for "$k") || { summary+=("kernel $k: NOT TESTED: no linux-image-amd64 $k.x in bookworm{,-updates,-security,-backports}"); status=1; return 0; }
	fi
	kdir="$work/$pkg"
	mkdir -p "$kdir"

	# The package, downloaded once per version.
	ver=$(apt-cache "${aptopts[@]}" show "$pkg" 2>/dev/null | sed -n 's/^Version: //p' | sort -V | tail -1)
	[ -n "$ver" ] || { summary+=("kernel $k: NOT TESTED: $pkg not in the package lists"); status=1; return 0; }
	deb="$kdir/${pkg}_${ver}_amd64.deb"
	if [ ! -f "$deb" ]; then
		rm -f "$kdir"/*.deb
		log "downloading $pkg $ver"
		(cd "$kdir" && apt-get "${aptopts[@]}" -qq download "$pkg=$ver")
		[ -f "$deb" ] || fail "apt-get download left no $deb"
	fi

	x="$kdir/root"
	if [ ! -f "$x/.extracted" ] || [ "$deb" -nt "$x/.extracted" ]; then
		rm -rf "$x"
		mkdir -p "$x"
		dpkg-deb -x "$deb" "$x"
		touch "$x/.extracted"
	fi
	vmlinuz=$(ls "$x"/boot/vmlinuz-* | head -1)
	local kver=${vmlinuz##*/vmlinuz-}
	mods=$(ls -d "$x"/lib/modules/"$kver" "$x"/usr/lib/modules/"$kver" 2>/dev/null | head -1 || true)
	[ -n "$mods" ] || fail "no modules directory for $kver in $deb"
	# The package ships no modules.dep (its postinst makes it): depmod does.
	[ -f "$mods/modules.dep" ] || depmod -b "${mods%/lib/modules/$kver}" "$kver"

	# The initramfs: busybox, init.sh, the modules (decompressed: busybox's
	# insmod hands the file to the kernel as it is), init.sh's settings.
	ird="$kdir/initramfs"
	rm -rf "$ird"
	mkdir -p "$ird/bin" "$ird/modules" "$ird/etc" "$ird/dev" "$ird/proc" "$ird/sys" "$ird/root" "$ird/tmp"
	cp "$busybox" "$ird/bin/busybox"
	cp "$here/init.sh" "$ird/init"
	chmod 755 "$ird/init"
	if [ "$(id -u)" = 0 ]; then mknod -m 600 "$ird/dev/console" c 5 1; fi
	mod_resolve "$mods" virtio_pci 9pnet_virtio 9p
	: > "$ird/modules/order"
	for m in "${order[@]}"; do
		src="$mods/$m"
		dst=${m##*/}
		case "$dst" in
		*.ko.xz) xz -dc "$src" > "$ird/modules/${dst%.xz}"; dst=${dst%.xz} ;;
		*.ko.zst) zstd -qdc "$src" > "$ird/modules/${dst%.zst}"; dst=${dst%.zst} ;;
		*.ko.gz) gzip -dc "$src" > "$ird/modules/${dst%.gz}"; dst=${dst%.gz} ;;
		*) cp "$src" "$ird/modules/$dst" ;;
		esac
		echo "$dst" >> "$ird/modules/order"
	done
	printf "TREE='%s'\nBUILD='%s'\nJOBS='%s'\nLIMIT='%s'\nCTEST_ARGS='%s'\nTEST_ENV='%s'\nSCALE='%s'\nBENCH='%s'\n" \
		"$tree" "$build" "$jobs" "$limit" "$ctest_args" "$test_env" "$scale" "$bench" > "$ird/etc/hetmm-kernels.conf"
	(cd "$ird" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) > "$kdir/initrd.gz"

	local console="$kdir/console.log" results="$kdir/results.log"
	rm -f "$console" "$results" "$kdir"/conformance-*.log
	log "booting $kver (qemu, tcg, -smp $smp -m $mem, THP $thp; modules: $(tr '\n' ' ' < "$ird/modules/order"))"
	log "  logs: $console, $results"
	# transparent_hugepage: Debian's images are built with THP "always"
	# (CONFIG_TRANSPARENT_HUGEPAGE_ALWAYS), what their users get, and the
	# guests boot so unless KERNELS_THP says otherwise.
	t0=$(date +%s)
	set +e
	nice -n 10 timeout -k 30 $((limit + 600)) qemu-system-x86_64 \
		-accel tcg -cpu "$cpu" -m "$mem" -smp "$smp" \
		-nodefaults -display none -no-reboot \
		-kernel "$vmlinuz" -initrd "$kdir/initrd.gz" \
		-append "console=ttyS0 loglevel=4 panic=-1 rdinit=/init transparent_hugepage=$thp" \
		-serial "file:$console" -serial "file:$results" \
		-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
		> "$kdir/qemu.log" 2>&1
	rc=$?
	set -e
	t1=$(date +%s)
	log "  guest ran $((t1 - t0)) s, qemu exit $rc"
	if [ -n "$bench" ]; then
		judge_bench "$kver" "$results" "$console" "$rc" "$kdir/bench.json"
	else
		judge "$k" "$kver" "$results" "$console" "$rc"
	fi
	summary+=("  (guest ran $((t1 - t0)) s)")
}

# guest_failure RESULTS QEMU_RC: why the guest's run cannot be believed
# (no begin or end marker, or it gave up), or nothing.
guest_failure() {
	local r=$1 qrc=$2
	if ! grep -q '^HETMM-KERNELS: begin' <<<"$r"; then
		echo "the guest never started init (qemu exit $qrc)"
	elif grep -q '^HETMM-KERNELS: abort' <<<"$r"; then
		echo "the guest gave up: $(sed -n 's/^HETMM-KERNELS: abort: //p' <<<"$r" | head -1)"
	elif ! grep -q '^HETMM-KERNELS: end$' <<<"$r"; then
		echo "the guest did not finish (no end marker; qemu exit $qrc)"
	fi
}

# failed_to_run KVER WHY RESULTS CONSOLE: the summary of a guest whose
# run cannot be believed, with the tail of both logs.
failed_to_run() {
	local kver=$1 why=$2 results=$3 console=$4 line
	summary+=("kernel $kver: FAILED TO RUN: $why; see $results and $console")
	while IFS= read -r line; do summary+=("  console| $line"); done < <(tr -d '\r' < "$console" 2>/dev/null | tail -n 30)
	while IFS= read -r line; do summary+=("  results| $line"); done < <(tr -d '\r' < "$results" 2>/dev/null | tail -n 15)
	status=1
}

# judge_bench KVER RESULTS CONSOLE QEMU_RC JSON: the benchmark's JSON,
# kept only from a guest that reached its end with the bench exiting 0;
# the summary shows its ratios.
judge_bench() {
	local kver=$1 results=$2 console=$3 qrc=$4 json=$5 r why rc
	r=$(tr -d '\r' < "$results" 2>/dev/null || true)
	why=$(guest_failure "$r" "$qrc")
	rc=$(sed -n 's/^HETMM-KERNELS: bench rc=\([0-9]*\).*/\1/p' <<<"$r" | tail -1)
	[ -n "$why" ] || [ "$rc" = 0 ] || why="hetmm bench exited ${rc:-?}"
	if [ -n "$why" ]; then
		failed_to_run "$kver" "$why" "$results" "$console"
		return 0
	fi
	sed -n '/^HETMM-KERNELS: bench json$/,/^HETMM-KERNELS: bench json end$/p' <<<"$r" | sed '1d;$d' > "$json"
	local gk
	gk=$(sed -n 's/^HETMM-KERNELS: begin kernel=//p' <<<"$r" | head -1)
	summary+=("kernel $gk: bench done ($(sed -n 's/^HETMM-KERNELS: bench rc=0 //p' <<<"$r")), JSON in $json")
	while IFS= read -r line; do summary+=("  $line"); done < <(grep -E '^ *"(ratios|targets)": \{' "$json")
}

# judge KERNEL KVER RESULTS CONSOLE QEMU_RC: the guest's verdict, believed
# only if complete: its end marker, a result line whose counts add up to
# the number of tests this build has, and one ctest status line per test.
judge() {
	local k=$1 kver=$2 results=$3 console=$4 qrc=$5 r res total passed failed n line
	r=$(tr -d '\r' < "$results" 2>/dev/null || true)
	local why
	why=$(guest_failure "$r" "$qrc")
	res=$(sed -n 's/^HETMM-KERNELS: result //p' <<<"$r" | tail -1)
	if [ -z "$why" ] && [ -z "$res" ]; then why="no result line"; fi
	if [ -n "$why" ]; then
		failed_to_run "$kver" "$why" "$results" "$console"
		return 0
	fi
	total=$(sed -n 's/.*\btotal=\([0-9]*\).*/\1/p' <<<"$res")
	passed=$(sed -n 's/.*\bpassed=\([0-9]*\).*/\1/p' <<<"$res")
	failed=$(sed -n 's/.*\bfailed=\([^ ]*\).*/\1/p' <<<"$res" | tr ',' ' ')
	n=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: ' <<<"$r" || true)
	local gk
	gk=$(sed -n 's/^HETMM-KERNELS: begin kernel=//p' <<<"$r" | head -1)
	if [ "$total" != "$expected" ] || [ "$n" != "$expected" ] ||
		[ $((passed + $(wc -w <<<"$failed"))) != "$total" ]; then
		summary+=("kernel $gk: FAILED TO RUN: counts do not add up (build has $expected tests, guest says total=$total passed=$passed, $n status lines)")
		status=1
		return 0
	fi
	local note=
	[ "$scale" = 1 ] || note=" (test timeouts x$scale)"
	[ -z "$test_env" ] || note="$note (with $test_env)"
	summary+=("kernel $gk: $passed/$total tests passed$note${failed:+; failed: $failed}")
	# Each conformance suite under the shim, one line: its totals and
	# which of its tests failed (known failures included).
	local conf suite suites
	suites=$(sed -n 's/^HETMM-KERNELS: conformance log \([^ ]*\)$/\1/p' <<<"$r")
	for suite in $suites; do
		conf=$(sed -n "/^HETMM-KERNELS: conformance log $suite\$/,/^HETMM-KERNELS: conformance end $suite\$/p" <<<"$r" | sed '1d;$d')
		printf '%s\n' "$conf" > "$(dirname "$results")/conformance-$suite.log"
		# (grep finds no "not ok" in a suite that failed nothing.)
		summary+=("  conformance-$suite: $(grep -E '^# Totals' <<<"$conf" | sed 's/^# Totals: //' || echo 'no totals')$(grep -E '^not ok ' <<<"$conf" | awk '{printf "%s %s", (n++ ? "," : "; not ok:"), $4}' || true)")
	done
	# Each failed test's status line and output, as ctest printed it.
	local t
	for t in $failed; do
		summary+=("  --- $t on $gk:")
		while IFS= read -r line; do summary+=("  | $line"); done < <(awk -v t="$t" '
			/^ *[0-9]+\/[0-9]+ Test +#[0-9]+: / { on = ($4 == t) }
			/^ *Start +[0-9]+: / || /^[0-9]+% tests passed/ { on = 0 }
			on && NF && !/^ok [0-9]+ /' <<<"$r" | head -n "${KERNELS_FAIL_LINES:-80}")
	done
	# When a conformance test failed: each of its suite's failed tests
	# (the known failures too), as its harness reported it.
	for suite in $suites; do
		[[ " $failed " == *" conformance-$suite "* ]] || continue
		local clog
		clog="$(dirname "$results")/conformance-$suite.log"
		summary+=("  --- conformance-$suite's failures on $gk (all of it: $clog):")
		while IFS= read -r line; do summary+=("  | $line"); done < <(awk '
			/^#  RUN / || /^# \[RUN\] / { n = 0 }
			{ sub(/# \/.*\//, "# "); blk[n++] = $0 }
			/^not ok / { for (i = 0; i < n; i++) print blk[i] }' "$clog")
	done
	# The kernel's complaints, if any.
	local oops
	oops=$(tr -d '\r' < "$console" | grep -E 'BUG:|WARNING:|Oops|general protection|Kernel panic|hung_task|soft lockup' | head -10 || true)
	if [ -n "$oops" ]; then
		summary+=("  kernel messages on $gk:")
		while IFS= read -r line; do summary+=("  ! $line"); done <<<"$oops"
	fi
	[ "$passed" = "$total" ] || status=1
}

t_all=$(date +%s)
for k in "${kernels[@]}"; do
	run_kernel "$k"
done

echo
echo "=== test-kernels: $(basename "$build") ($expected tests), $(( $(date +%s) - t_all )) s"
printf '%s\n' "${summary[@]}"
if [ -n "$bench" ]; then what="ran the benchmark"; else what="passed every test"; fi
[ "$status" = 0 ] && echo "test-kernels: every kernel $what" ||
	echo "test-kernels: FAILED"
exit "$status"

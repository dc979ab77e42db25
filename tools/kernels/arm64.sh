#!/usr/bin/env bash
# arm64.sh BUILD_DIR [PACKAGE]     (`make test-arm64`)
#
# hetmm's test programs on arm64, under a Debian kernel booted in
# qemu-system-aarch64 (software emulation: -M virt -cpu max).  BUILD_DIR is
# an arm64 build with static executables (tools/cross-arm64.sh, `make
# cross-arm64`).  PACKAGE is a Debian 12 arm64 image package; by default
# the newest linux-image-*-arm64-16k-unsigned of bookworm-backports: 16 KiB
# pages (seeds 000 and 002), so that nothing that assumes 4 KiB passes.
# ARM64_PAGES=4k takes the newest 4 KiB one (linux-image-*-arm64-unsigned).
#
# The package and busybox-static (arm64) are downloaded into
# BUILD_DIR/kernels with a private apt state (tools/kernels/apt.sh, its
# architecture arm64; the host's apt is not touched), never installed.
# The initramfs holds busybox, tools/kernels/arm64-init.sh as /init, and
# the programs: the C tests of tests/CMakeLists.txt (not test_shim, which
# needs LD_PRELOAD), the examples ctest runs as they are (not
# example_remote, which needs a memory server beside it) and `hetmm info`.
# Each runs with a time limit (ARM64_LIMIT seconds; by default ctest's 120
# times ARM64_TIME_SCALE, 10, which the guest also gives the tests as
# HETMM_TEST_TIME_SCALE for their own deadlines); ARM64_TESTS="test_a
# test_b" for a subset.  The guest's console is
# BUILD_DIR/kernels/<package>/console.log.
#
# Prints each program's result; exit 0 only if the guest booted, ran every
# program to the end marker, and every program exited 0 or 77 (skipped).
# qemu-system-arm and busybox are installed with apt-get if missing (root).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tree=$(cd "$here/../.." && pwd)
build=$(cd "${1:?usage: arm64.sh BUILD_DIR [PACKAGE]}" && pwd)
pkg=${2:-}
work="$build/kernels"
log() { echo "test-arm64: $*"; }
fail() { echo "test-arm64: $*" >&2; exit 1; }
# Under software emulation a program runs 10 to 50 times slower than on
# the host: its ctest TIMEOUT (120 s) times the scale, and the tests'
# own deadlines scaled the same way (HETMM_TEST_TIME_SCALE, tests/t.h).
scale=${ARM64_TIME_SCALE:-10}
[[ $scale =~ ^[1-9][0-9]*$ ]] || fail "ARM64_TIME_SCALE must be a whole number >= 1"
limit=${ARM64_LIMIT:-$((120 * scale))}

file "$build/tests/test_pagesize" 2>/dev/null | grep -q 'ARM aarch64.*statically linked' ||
	fail "$build/tests/test_pagesize is no static arm64 program: make cross-arm64 first"
if ! command -v qemu-system-aarch64 >/dev/null; then
	[ "$(id -u)" = 0 ] || fail "install qemu-system-arm (as root)"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		qemu-system-arm cpio >/dev/null
fi

. "$here/apt.sh"
debian_apt_init "$work/apt"
aptopts=("${aptopts[@]/APT::Architecture=amd64/APT::Architecture=arm64}")
log "updating the arm64 package lists (private to $work/apt)"
debian_apt_update "$work/apt-update.log" || { cat "$work/apt-update.log" >&2; fail "apt-get update failed"; }

if [ -z "$pkg" ]; then
	flavour='arm64-16k-unsigned'
	[ "${ARM64_PAGES:-16k}" = 4k ] && flavour='arm64-unsigned'
	pkg=$(apt-cache "${aptopts[@]}" search --names-only "^linux-image-[0-9].*-$flavour\$" |
		awk '{ print $1 }' | grep -vE -- '-(cloud|rt)-' | sort -V | tail -1)
	[ -n "$pkg" ] || fail "no linux-image-*-$flavour in the lists"
fi
kdir="$work/$pkg"
ver=$(debian_apt_newest "$pkg")
[ -n "$ver" ] || fail "$pkg not in the lists"
deb=$(ls "$kdir/${pkg}_"*.deb 2>/dev/null | head -1 || true)
[ -n "$deb" ] || { log "downloading $pkg $ver"; deb=$(debian_apt_download "$kdir" "$pkg" "$ver"); }
[ -f "$kdir/root/.extracted" ] || { rm -rf "$kdir/root"; dpkg-deb -x "$deb" "$kdir/root"; touch "$kdir/root/.extracted"; }
vmlinuz=$(ls "$kdir"/root/boot/vmlinuz-* | head -1)

bbdeb=$(ls "$work/busybox/busybox-static_"*_arm64.deb 2>/dev/null | head -1 || true)
[ -n "$bbdeb" ] || bbdeb=$(debian_apt_download "$work/busybox" busybox-static "$(debian_apt_newest busybox-static)")
[ -f "$work/busybox/root/bin/busybox" ] || dpkg-deb -x "$bbdeb" "$work/busybox/root"

# The programs: the C tests ctest lists for the build, the examples, the CLI.
ird="$kdir/initramfs"
rm -rf "$ird"
mkdir -p "$ird/bin" "$ird/tests" "$ird/dev" "$ird/proc" "$ird/sys" "$ird/tmp"
cp "$work/busybox/root/bin/busybox" "$ird/bin/busybox"
cp "$here/arm64-init.sh" "$ird/init"
chmod 755 "$ird/init"
if [ -n "${ARM64_TESTS:-}" ]; then
	list=$ARM64_TESTS
else
	list=$(sed -n '/^set(HETMM_TESTS/,/^)/p' "$tree/tests/CMakeLists.txt" | grep -o 'test_[a-z0-9_]*')
	# The examples ctest runs as they are (HETMM_EXAMPLES); not
	# example_remote, which ctest runs only beside a hetmm-memd server
	# (tools/remote-example.sh: bash and UCX, neither in the guest).
	examples=$(sed -n 's/^set(HETMM_EXAMPLES \(.*\))$/\1/p' "$tree/examples/CMakeLists.txt")
	[ -n "$examples" ] || fail "no HETMM_EXAMPLES in examples/CMakeLists.txt"
	list="$list $(printf 'example_%s ' $examples)"
	log "example_remote left out: it needs a hetmm-memd server beside it (tools/remote-example.sh), and the guest has neither bash nor UCX"
fi
: > "$ird/tests/list"
for t in $list; do
	f=$(ls "$build/tests/$t" "$build/examples/$t" 2>/dev/null | head -1 || true)
	[ -n "$f" ] || fail "$t is not built in $build"
	cp "$f" "$ird/tests/$t"
	echo "$t" >> "$ird/tests/list"
done
# test_drvapi reads the public header at the path it was built with.
hdr=$(strings "$build/tests/test_drvapi" 2>/dev/null | grep -m1 '/include/hetmm.h$' || true)
[ -z "$hdr" ] || { mkdir -p "$ird$(dirname "$hdr")"; cp "$tree/include/hetmm.h" "$ird$hdr"; }
cp "$build/hetmm" "$ird/tests/hetmm"
printf '#!/bin/sh\nexec /tests/hetmm info\n' > "$ird/tests/hetmm_info"
chmod 755 "$ird/tests/hetmm_info"
echo hetmm_info >> "$ird/tests/list"
echo "$limit" > "$ird/tests/limit"
echo "$scale" > "$ird/tests/time_scale"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) > "$kdir/initramfs.gz"

n=$(wc -l < "$ird/tests/list")
log "booting $pkg ($(file -b "$vmlinuz" | grep -o '[0-9]*K pages' || echo '?')), $n programs, up to ${limit}s each"
console="$kdir/console.log"
rc=0
timeout $((limit * n + 600)) qemu-system-aarch64 -M virt -cpu max -smp "${ARM64_SMP:-2}" \
	-m "${ARM64_MEM:-6G}" -nographic -no-reboot \
	-kernel "$vmlinuz" -initrd "$kdir/initramfs.gz" \
	-append "console=ttyAMA0 rdinit=/init panic=-1 transparent_hugepage=madvise" \
	> "$console" 2>&1 || rc=$?
tr -d '\r' < "$console" > "$console.txt"
grep '^HETMM-ARM64: ' "$console.txt" | sed 's/^HETMM-ARM64: /  /' | grep -v '^  start '
grep -q '^HETMM-ARM64: end' "$console.txt" || fail "the guest did not reach its end marker (qemu exit $rc): $console"
# 77 is a skip, as ctest's SKIP_RETURN_CODE has it (a test that says why
# it cannot run here: test_thp's device huge pages need 4 KiB pages).
passed=$(grep -c '^HETMM-ARM64: result .* rc=0$' "$console.txt" || true)
skipped=$(grep -c '^HETMM-ARM64: result .* rc=77$' "$console.txt" || true)
log "$pkg: $passed/$n programs passed, $skipped skipped"
[ $((passed + skipped)) -eq "$n" ]

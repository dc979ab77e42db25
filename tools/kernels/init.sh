#!/bin/busybox sh
# PID 1 of the guest that tools/kernels/run.sh boots: busybox sh, from the
# initramfs run.sh builds.  It loads the 9p/virtio modules of the guest's
# kernel, mounts the host's root read-only (virtio-9p, tag hostroot), gives
# the build directory a writable copy in tmpfs at its own path, runs the
# test suite there with ctest as `make test` does, and powers off.
#
# What the host reads comes on the second serial port (/dev/ttyS1), one
# "HETMM-KERNELS: ..." line per step; the kernel's own messages go to the
# first (the console).  The host takes the run as finished only on the
# "result" and "end" lines: anything that stops the guest before them
# (a panic, a hang, this script dying) reads as a failure.
#
# /etc/hetmm-kernels.conf (written by run.sh) sets TREE (the source
# directory) and BUILD (the host's build directory), absolute paths, JOBS (ctest -j), LIMIT (seconds the whole
# ctest run may take), CTEST_ARGS (more ctest arguments, such as -R NAME),
# TEST_ENV (VAR=value words added to the tests' environment) and SCALE
# (a factor for every test's ctest TIMEOUT, and HETMM_TEST_TIME_SCALE for
# the tests' own deadlines, tests/t.h; 1 keeps them) and BENCH
# (when set, `hetmm bench BENCH --json` runs instead of the tests).

PATH=/bin
export PATH
/bin/busybox mkdir -p /proc /sys /dev /root /tmp
/bin/busybox --install -s /bin

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
. /etc/hetmm-kernels.conf

stty -F /dev/ttyS1 raw -echo 2>/dev/null
exec 3>/dev/ttyS1
say() { echo "HETMM-KERNELS: $*" >&3; }
die() {
	say "abort: $*"
	echo "init: $*" >/dev/console
	sync
	poweroff -f
}

say "begin kernel=$(uname -r)"

# The 9p and virtio modules, in the order run.sh worked out from
# modules.dep (dependencies first; built-in ones are not listed).
for m in $(cat /modules/order); do
	insmod "/modules/$m" || die "insmod $m failed"
done

r=/root
n=0
until mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 \
	hostroot "$r"; do
	n=$((n + 1))
	[ "$n" -lt 10 ] || die "cannot mount the host's root over virtio-9p"
	sleep 1
done

# The host's root is read-only: the kernel filesystems, and tmpfs where
# programs write.
mount -t proc proc "$r/proc" || die "mount proc"
mount -t sysfs sysfs "$r/sys" || die "mount sysfs"
mount -t devtmpfs devtmpfs "$r/dev" || die "mount devtmpfs"
mount -t debugfs debugfs "$r/sys/kernel/debug" 2>/dev/null
mkdir -p "$r/dev/shm" "$r/dev/pts" "$r/dev/hugepages"
mount -t devpts devpts "$r/dev/pts" 2>/dev/null
# The tree under test (TREE, the source directory; BUILD) may itself lie
# under one of those, a clone in /tmp say: the host's view of it is kept
# aside first and bound back over the tmpfs.
under_tmpfs() {
	for d in /tmp /run /var/tmp /dev/shm; do
		case "$1/" in "$d"/*) return 0 ;; esac
	done
	return 1
}
kept=
for p in "$TREE" "$BUILD"; do
	under_tmpfs "$p" || continue
	mkdir -p "/keep$p"
	mount --bind "$r$p" "/keep$p" || die "keeping $p aside"
	kept="$kept $p"
done
for d in /tmp /run /var/tmp /dev/shm; do
	mount -t tmpfs -o mode=1777 tmpfs "$r$d" || die "mount tmpfs on $d"
done
for p in $kept; do
	mkdir -p "$r$p"
	mount --bind "/keep$p" "$r$p" || die "binding $p back"
done
mount -t hugetlbfs hugetlbfs "$r/dev/hugepages" 2>/dev/null
# Loopback, as any booted system has it: the remote-memory tests start
# their servers on 127.0.0.1.
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up ||
	die "loopback up"
# What udev would add: bash's process substitution (<(...), which
# conformance.sh uses) needs /dev/fd.
ln -s /proc/self/fd "$r/dev/fd"
ln -s /proc/self/fd/0 "$r/dev/stdin"
ln -s /proc/self/fd/1 "$r/dev/stdout"
ln -s /proc/self/fd/2 "$r/dev/stderr"
mkdir -p "$r/run/lock"

# The build directory, copied into tmpfs and bound over its own path, so
# that ctest finds every test where it was configured and writes its
# Testing/ (and conformance.sh its build) into the copy.  run.sh's own
# directory (BUILD/kernels: packages, kernels, logs) stays out.
b="$r$BUILD"
[ -f "$b/CTestTestfile.cmake" ] || die "$BUILD/CTestTestfile.cmake not found on the host's root"
copy="$r/run/hetmm-build"
mkdir -p "$copy"
for f in "$b"/* "$b"/.[!.]*; do
	[ -e "$f" ] || continue
	[ "${f##*/}" = kernels ] && continue
	cp -a "$f" "$copy/" || die "copying $f into tmpfs"
done
mount --bind "$copy" "$b" || die "bind-mounting the build copy"
# A conformance log copied from the host is not this kernel's.
rm -f "$b"/conformance/*/harness.log
# Each test's ctest TIMEOUT times SCALE, if asked (the copy's, not the
# host's): software emulation runs some tests 10 to 50 times slower.
if [ "$SCALE" != 1 ]; then
	find "$b" -name CTestTestfile.cmake | while read -r f; do
		awk -v k="$SCALE" '{
			if (match($0, /TIMEOUT "[0-9]+"/)) {
				v = substr($0, RSTART + 9, RLENGTH - 10)
				$0 = substr($0, 1, RSTART - 1) "TIMEOUT \"" int(v * k) "\"" substr($0, RSTART + RLENGTH)
			}
			print }' "$f" > "$f.new" && mv "$f.new" "$f"
	done
fi

guest() {
	chroot "$r" /usr/bin/env -i \
		PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		HOME=/tmp TMPDIR=/tmp LANG=C.UTF-8 TERM=dumb \
		HETMM_TEST_TIME_SCALE=$SCALE $TEST_ENV \
		/bin/sh -c 'cd "$0" && exec "$@"' "$BUILD" "$@"
}

say "info"
guest ./hetmm info >&3 2>&3
say "hugepages=$(cat /proc/sys/vm/nr_hugepages) mem=$(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo) cpus=$(grep -c ^processor /proc/cpuinfo)"

# The benchmark instead of the tests: its JSON between two markers, and
# its exit status.
if [ -n "$BENCH" ]; then
	say "bench args=$BENCH"
	start=$(date +%s)
	guest timeout -s KILL "$LIMIT" ./hetmm bench $BENCH --json >/bench.json 2>/bench.err
	rc=$?
	say "bench json"
	cat /bench.json >&3
	say "bench json end"
	[ "$rc" -eq 0 ] || tail -n 20 /bench.err >&3
	say "bench rc=$rc seconds=$(($(date +%s) - start))"
	say "end"
	exec 3>&-
	sync
	poweroff -f
fi

total=$(guest ctest -N $CTEST_ARGS | sed -n 's/^Total Tests: *//p')
[ -n "$total" ] || die "ctest -N lists no tests"
say "ctest total=$total jobs=$JOBS limit=${LIMIT}s timeout-scale=$SCALE args=$CTEST_ARGS env=$TEST_ENV"

# The copy may hold the host's last record of failures, which a run
# that fails nothing leaves in place: not this run's.
rm -f "$b/Testing/Temporary/LastTestsFailed.log"
start=$(date +%s)
guest timeout -s KILL "$LIMIT" ctest --output-on-failure -j "$JOBS" $CTEST_ARGS >&3 2>&3
rc=$?
took=$(($(date +%s) - start))
[ "$rc" -eq 137 ] && die "ctest killed after ${LIMIT}s"

# ctest's own record of what failed (absent when nothing did).
failed=
f="$b/Testing/Temporary/LastTestsFailed.log"
if [ -f "$f" ]; then
	failed=$(sed -n 's/^[0-9]*://p' "$f" | tr '\n' ',' | sed 's/,$//')
fi
nfailed=0
[ -n "$failed" ] && nfailed=$(echo "$failed" | tr ',' '\n' | grep -c .)
[ "$rc" -ne 0 ] && [ "$nfailed" -eq 0 ] && die "ctest exited $rc with no failed test recorded"
# Each conformance suite's log (the harness's own output, repeated lines
# already folded by conformance.sh), for the record: ctest shows a test's
# output only when it fails, and the copy dies with the guest.
for c in "$b"/conformance/*/harness.log; do
	[ -f "$c" ] || continue
	d=${c%/harness.log}
	say "conformance log ${d##*/}"
	cat "$c" >&3
	say "conformance end ${d##*/}"
done
say "result total=$total passed=$((total - nfailed)) failed=$failed ctest_rc=$rc seconds=$took"
say "end"
exec 3>&-
sync
poweroff -f

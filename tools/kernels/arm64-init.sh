#!/bin/busybox sh
# PID 1 of the arm64 guest that tools/kernels/arm64.sh boots: busybox sh
# from an initramfs that holds everything the run needs (static arm64
# binaries: no root file system is shared, foreign binaries could not run
# from the host's).  It runs each program listed in /tests/list, one at a
# time with a time limit, from /tests, and powers off.  Its lines for the
# host go to the console, each "HETMM-ARM64: ..."; only the "end" line
# makes the run complete.
PATH=/bin
export PATH
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mkdir -p /dev/shm
mount -t tmpfs tmpfs /dev/shm
say() { echo "HETMM-ARM64: $*"; }

say "begin kernel=$(uname -r) machine=$(uname -m) page_size=$(getconf PAGESIZE 2>/dev/null || echo ?)"
say "thp $(cat /sys/kernel/mm/transparent_hugepage/enabled 2>/dev/null) pmd $(cat /sys/kernel/mm/transparent_hugepage/hpage_pmd_size 2>/dev/null)"
limit=$(cat /tests/limit)
HETMM_TEST_TIME_SCALE=$(cat /tests/time_scale)
export HETMM_TEST_TIME_SCALE
cd /tests
for t in $(cat /tests/list); do
	say "start $t"
	timeout "$limit" "./$t" > "/tmp/$t.log" 2>&1
	rc=$?
	cat "/tmp/$t.log"
	say "result $t rc=$rc"
done
say "end"
sync
poweroff -f

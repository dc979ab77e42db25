#!/usr/bin/env bash
# deps.sh - install what the build and `make test` use, where missing:
#   systemtap-sdt-dev  sys/sdt.h, for the USDT probes (without it the
#                      library builds without them)
#   pkg-config         the install test builds an example with it
#   python3            tools/apiref.py, the API reference and its check
#   liburing-dev       io_uring for the file device (without it the device
#                      copies with pread/pwrite)
#   libucx-dev         UCX's headers and libraries, for the remote device
#                      and hetmm-memd (without it they are not built)
# Debian packages, with apt-get, as root only; otherwise it says what is
# missing and leaves it (the build goes on).  Never fails the build.
set -u
missing=()
printf '#include <sys/sdt.h>\n' | ${CC:-cc} -E -x c - >/dev/null 2>&1 ||
	missing+=(systemtap-sdt-dev)
printf '#include <liburing.h>\n' | ${CC:-cc} -E -x c - >/dev/null 2>&1 ||
	missing+=(liburing-dev)
printf '#include <ucp/api/ucp.h>\n' | ${CC:-cc} -E -x c - >/dev/null 2>&1 ||
	missing+=(libucx-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "deps: missing ${missing[*]} (as root: apt-get install" \
	     "${missing[*]}); building without them" >&2
	exit 0
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
	{ apt-get update -qq >/dev/null 2>&1 &&
	  apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; } ||
	echo "deps: could not install ${missing[*]}; building without them" >&2
exit 0

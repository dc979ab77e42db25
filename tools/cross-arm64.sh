#!/usr/bin/env bash
# cross-arm64.sh - build hetmm for arm64 with Debian's cross compiler, with
# the same -Wall -Wextra -Werror as the native build: the library, the
# shim, the CLI, the tests and the benchmark.  Executables are linked
# statically, so that they run where no arm64 root file system is (the
# guest of tools/kernels/arm64.sh, qemu-aarch64).
#
#   tools/cross-arm64.sh [BUILD_DIR]      (default build-arm64)
#
# Installs gcc-aarch64-linux-gnu and libc6-dev-arm64-cross with apt-get
# when the compiler is missing and we are root; otherwise says what to
# install and exits 2.  The native build never needs them.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-arm64}

if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
	if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y \
			--no-install-recommends gcc-aarch64-linux-gnu \
			libc6-dev-arm64-cross
	else
		echo "cross-arm64: aarch64-linux-gnu-gcc missing: apt-get install" \
		     "gcc-aarch64-linux-gnu libc6-dev-arm64-cross" >&2
		exit 2
	fi
fi

cmake -S . -B "$build" \
	-DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64-linux-gnu.cmake" \
	-DCMAKE_EXE_LINKER_FLAGS=-static
cmake --build "$build" -j "${JOBS:-2}"
file "$build/hetmm" | grep -q 'ARM aarch64' ||
	{ echo "cross-arm64: $build/hetmm is not an arm64 binary" >&2; exit 1; }
echo "cross-arm64: built for arm64 in $build"

#!/usr/bin/env bash
# subproject.sh SOURCE_DIR
#
# hetmm inside another project's build: a parent project of its own (with
# a README.md of its own, which hetmm must not read) takes hetmm in with
# FetchContent (FetchContent_MakeAvailable adds it with add_subdirectory),
# builds examples/readme.c against hetmm::hetmm_static and
# examples/tier.c against hetmm::hetmm, and runs them.  Any failure
# exits 1.
set -Eeuo pipefail
on_err() { echo "subproject: line $1: $2 failed" >&2; exit 1; }
trap 'on_err $LINENO "$BASH_COMMAND"' ERR

src=$(cd "${1:?usage: subproject.sh SOURCE_DIR}" && pwd)
tmp=$(mktemp -d /tmp/hetmm-subproject.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "subproject: $*" >&2; exit 1; }

cd "$tmp"
cp "$src/examples/readme.c" "$src/examples/tier.c" .
printf '# parent\n\nNot hetmm.\n' > README.md
cat > CMakeLists.txt <<CM
cmake_minimum_required(VERSION 3.20)
project(parent C)
include(FetchContent)
FetchContent_Declare(hetmm SOURCE_DIR "$src")
FetchContent_MakeAvailable(hetmm)
add_executable(readme readme.c)
target_link_libraries(readme PRIVATE hetmm::hetmm_static)
add_executable(tier tier.c)
target_link_libraries(tier PRIVATE hetmm::hetmm)
CM
cmake -S . -B b ${CC:+-DCMAKE_C_COMPILER="$CC"} > cmake.log 2>&1 ||
	{ cat cmake.log; fail "configure with hetmm as a subproject failed"; }
cmake --build b -j 2 --target readme tier > build.log 2>&1 ||
	{ tail -40 build.log; fail "build failed"; }
./b/readme || fail "readme failed"
./b/tier > tier.log || { cat tier.log; fail "tier failed"; }
grep -q '^tier: ok$' tier.log || fail "tier did not finish"
echo "subproject: FetchContent/add_subdirectory: readme and tier built and ran"

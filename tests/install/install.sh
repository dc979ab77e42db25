#!/usr/bin/env bash
# install.sh SOURCE_DIR BUILD_DIR
#
# hetmm as a user gets it: `make install` into a staging DESTDIR under a
# temporary directory, then examples built outside the tree against what
# was installed, and run:
#   - examples/accel.c with `cc ... $(pkg-config --cflags --libs hetmm)`;
#   - examples/tier.c with CMake's find_package(hetmm), hetmm::hetmm;
#   - examples/readme.c with find_package(hetmm), hetmm::hetmm_static.
# Checks the installed files, the SONAME and its links, and the version
# pkg-config and CMake report against the header's.  Any failure exits 1.
set -Eeuo pipefail
on_err() { echo "install: line $1: $2 failed" >&2; exit 1; }
trap 'on_err $LINENO "$BASH_COMMAND"' ERR

src=$(cd "${1:?usage: install.sh SOURCE_DIR BUILD_DIR}" && pwd)
build=$(cd "${2:?usage: install.sh SOURCE_DIR BUILD_DIR}" && pwd)
cc=${CC:-cc}
tmp=$(mktemp -d /tmp/hetmm-install.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "install: $*" >&2; exit 1; }

ver() { sed -n "s/^#define HETMM_VERSION_$1 \([0-9]*\)$/\1/p" "$src/include/hetmm.h"; }
version="$(ver MAJOR).$(ver MINOR).$(ver PATCH)"
[ "$version" != ".." ] || fail "no HETMM_VERSION_* in hetmm.h"

# The front door, as a packager calls it.
env -u MAKEFLAGS -u MAKELEVEL -u MFLAGS \
	make -s -C "$src" install BUILD="$build" PREFIX=/opt/hetmm \
	DESTDIR="$tmp/stage" > "$tmp/make-install.log"
p="$tmp/stage/opt/hetmm"
libdir=$(dirname "$(find "$p" -name libhetmm.a)")
for f in "$p/include/hetmm.h" "$libdir/libhetmm.a" \
	 "$libdir/libhetmm.so.$version" "$libdir/pkgconfig/hetmm.pc" \
	 "$libdir/cmake/hetmm/hetmmConfig.cmake" \
	 "$libdir/cmake/hetmm/hetmmConfigVersion.cmake" "$p/bin/hetmm"; do
	[ -f "$f" ] || fail "not installed: ${f#"$tmp/stage"}"
done
major=${version%%.*}
[ "$(readlink "$libdir/libhetmm.so")" = "libhetmm.so.$major" ] ||
	fail "libhetmm.so does not point to libhetmm.so.$major"
[ "$(readlink "$libdir/libhetmm.so.$major")" = "libhetmm.so.$version" ] ||
	fail "libhetmm.so.$major does not point to libhetmm.so.$version"
soname=$(readelf -d "$libdir/libhetmm.so.$version" |
	 sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ "$soname" = "libhetmm.so.$major" ] || fail "SONAME is '$soname'"
cmp -s "$p/include/hetmm.h" "$src/include/hetmm.h" ||
	fail "the installed header is not include/hetmm.h"
echo "install: installed under DESTDIR, SONAME $soname, version $version"

# Outside the tree: copies of the examples, nothing else of the source.
mkdir "$tmp/use"
cp "$src/examples/accel.c" "$src/examples/tier.c" "$src/examples/readme.c" \
   "$tmp/use/"
cd "$tmp/use"

# pkg-config, as the README says.
export PKG_CONFIG_PATH="$libdir/pkgconfig"
[ "$(pkg-config --modversion hetmm)" = "$version" ] ||
	fail "pkg-config --modversion hetmm: $(pkg-config --modversion hetmm)"
# shellcheck disable=SC2046
"$cc" -std=c11 -Wall -Wextra -Werror accel.c -o accel \
	$(pkg-config --cflags --libs hetmm)
LD_LIBRARY_PATH="$libdir" ./accel > accel.log || {
	cat accel.log; fail "accel, built with pkg-config, failed"; }
grep -q '^accel: ok$' accel.log || fail "accel did not finish"
# (ldd's whole output first: grep -q leaving early would make it die of
# SIGPIPE, a failure under pipefail.)
libs=$(LD_LIBRARY_PATH="$libdir" ldd ./accel)
grep -q "libhetmm.so.$major => $libdir/" <<<"$libs" ||
	fail "accel is not linked with the installed libhetmm.so.$major: $libs"
echo "install: pkg-config: accel built and ran against the installed library"

# find_package(hetmm).
cat > CMakeLists.txt <<'CM'
cmake_minimum_required(VERSION 3.20)
project(use_hetmm C)
find_package(hetmm 0.1 REQUIRED)
add_executable(tier tier.c)
target_link_libraries(tier PRIVATE hetmm::hetmm)
add_executable(readme readme.c)
target_link_libraries(readme PRIVATE hetmm::hetmm_static)
CM
cmake -S . -B b -DCMAKE_PREFIX_PATH="$p" -DCMAKE_C_COMPILER="$cc" \
	> cmake.log 2>&1 || { cat cmake.log; fail "find_package(hetmm) failed"; }
grep -q "hetmm_DIR:PATH=$libdir/cmake/hetmm" b/CMakeCache.txt ||
	fail "find_package found another hetmm than the one installed"
cmake --build b > build.log 2>&1 || { cat build.log; fail "build failed"; }
./b/tier > tier.log || { cat tier.log; fail "tier (find_package) failed"; }
grep -q '^tier: ok$' tier.log || fail "tier did not finish"
./b/readme || fail "readme (find_package, static) failed"
echo "install: find_package: tier (shared) and readme (static) built and ran"

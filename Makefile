# Front door: make | make demo | make test | make bench | make conformance
#             make test-kernels
BUILD ?= build
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc)

.PHONY: all build install demo test bench bench-probes asan tsan soak clean conformance test-kernels bench-kernels cross-arm64 test-arm64 \
	fuzz fuzz-merge fuzz-replay

all: build

# tools/deps.sh installs sys/sdt.h (the USDT probes), pkg-config and python3 if
# missing, as root with apt-get; without them the build goes on.
$(BUILD)/Makefile:
	./tools/deps.sh
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

# The header, the static and shared libraries, hetmm.pc, the CMake
# package (find_package(hetmm)) and the CLI, under $(DESTDIR)$(PREFIX).
PREFIX ?= /usr/local
DESTDIR ?=
install: build
	DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"

demo: build
	./$(BUILD)/hetmm demo

test: build
	@echo "make test: the suite runs the kernel's own selftests too (tests"
	@echo "  'conformance-*', minutes, alone).  As root they set"
	@echo "  vm.nr_hugepages to 4 while they run (put back after); a package"
	@echo "  of the kernel's sources not installed is downloaded from Debian's"
	@echo "  mirrors.  The rest without them:"
	@echo "  cd $(BUILD) && ctest -E '^conformance-'"
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

bench: build
	./$(BUILD)/hetmm bench

# The USDT probes' cost on the fault path: this build against one without
# probes (tools/probe-cost.sh; TRACED=1 adds runs with bpftrace attached).
bench-probes: build
	./tools/probe-cost.sh $(BUILD)

# The kernel's own selftests under the ABI shim
# (LD_PRELOAD=$(BUILD)/libhetmm-dmirror.so): hmm-tests of Linux 6.1 and
# 6.12 and 6.12's gup_longterm, from Debian's linux-source-6.1 and -6.12,
# built unmodified in $(BUILD)/conformance; the ctest tests conformance-*
# (tests/CMakeLists.txt lists the suites, tests/conformance/conformance.sh
# says how each is got, built and judged).
conformance: build
	cd $(BUILD) && ctest -V -R '^conformance-'

# The test suite (ctest, conformance included) under Debian's own kernels,
# each booted in qemu (software emulation) over this machine's root,
# mounted read-only: 6.1 is Debian 12's, 6.12 its backports'.  Downloads
# the kernel packages into $(BUILD)/kernels; installs qemu-system-x86 and
# busybox-static if missing.  KERNELS="6.1" for one; see tools/kernels/run.sh.
KERNELS ?= 6.1 6.12
test-kernels: build
	./tools/kernels/run.sh $(BUILD) $(KERNELS)

# The benchmark (`hetmm bench --quick`, or BENCH_ARGS) under the same
# kernels, instead of the tests: each guest's JSON in
# $(BUILD)/kernels/<package>/bench.json.  Software emulation: see
# docs/PERFORMANCE.md for which ratios mean something there.
BENCH_ARGS ?= --quick
bench-kernels: build
	KERNELS_BENCH="$(BENCH_ARGS)" ./tools/kernels/run.sh $(BUILD) $(KERNELS)

# arm64 with Debian's cross compiler (installed if missing, as root), the
# same -Wall -Wextra -Werror: everything in build-arm64, executables
# linked statically (tools/cross-arm64.sh).
cross-arm64:
	./tools/cross-arm64.sh build-arm64

# Those tests on arm64 with 16 KiB pages: Debian's bookworm-backports
# arm64-16k kernel booted in qemu-system-aarch64 (software emulation) on
# an initramfs of the static programs (tools/kernels/arm64.sh;
# ARM64_PAGES=4k, ARM64_TESTS="test_a ...", ARM64_LIMIT=seconds).
test-arm64: cross-arm64
	./tools/kernels/arm64.sh build-arm64

# The stress test for a long while (the normal build; ctest runs it for
# 2 s).  SOAK_SECONDS=n to change.
SOAK_SECONDS ?= 1800
soak: build
	HETMM_STRESS_SECONDS=$(SOAK_SECONDS) ./$(BUILD)/tests/test_stress

# Sanitizer builds: the same tests under ASan+UBSan, and under TSan.
asan:
	$(MAKE) test BUILD=build-asan CMAKE_FLAGS="-DHETMM_SANITIZE=address,undefined -DCMAKE_BUILD_TYPE=Debug"

tsan:
	$(MAKE) test BUILD=build-tsan CMAKE_FLAGS="-DHETMM_SANITIZE=thread -DCMAKE_BUILD_TYPE=Debug"

# Fuzzing (clang's libFuzzer with ASan and UBSan; fuzz/run.sh): build the
# targets in build-fuzz/, replay the known findings, then run each target
# for FUZZ_SECONDS; fails if a finding still reproduces or a crash, leak,
# timeout or OOM turned up.  fuzz-merge minimizes what runs found into
# fuzz/corpus/; fuzz-replay runs the corpus and the findings once.
FUZZ_SECONDS ?= 60
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) ./fuzz/run.sh run

fuzz-merge:
	./fuzz/run.sh merge

fuzz-replay:
	./fuzz/run.sh replay

clean:
	rm -rf build build-asan build-tsan build-fuzz

/* SPDX-License-Identifier: MIT */
/*
 * test_shim: the kernel ABI shim, run as a program under it would run
 * (ctest sets LD_PRELOAD=libhetmm-dmirror.so): the dmirror and gup_test
 * ioctls with their kernel return values and errno, descriptors that dup,
 * close and fork like real ones, and every other call passed through.
 *
 * The ABI comes from the shim's own header (src/shim/shim.h), which
 * defines it from the kernel's published values.
 */
#include <signal.h>
#include <stdbool.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>

/* Not linked with hetmm: the kernel's page size, as its selftests take it. */
#define PS ((size_t)sysconf(_SC_PAGESIZE))
#include "t.h"
#include "shim.h"

static int dm_cmd(int fd, unsigned long req, void *addr, void *ptr,
		  uint64_t npages, struct shim_dmirror_cmd *c)
{
	memset(c, 0, sizeof(*c));
	c->addr = (uintptr_t)addr;
	c->ptr = (uintptr_t)ptr;
	c->npages = npages;
	return ioctl(fd, req, c) ? -errno : 0;
}

/* n pages at p get pattern seed and go to fd's device (buf: the
 * command's buffer of n pages). */
static void fill_to_dev(int fd, char *p, size_t n, uint64_t seed, void *buf)
{
	struct shim_dmirror_cmd c;
	t_fill(p, n, seed);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_DEV, p, buf, n, &c), 0);
}

static int open_dm(int unit)
{
	char path[32];
	snprintf(path, sizeof(path), "/dev/hmm_dmirror%d", unit);
	return open(path, O_RDWR | O_CLOEXEC);
}

static void preloaded(void)
{
	/* Without the shim there is no device: say so plainly. */
	int fd = open_dm(0);
	if (fd < 0) {
		fprintf(stderr, "test_shim: /dev/hmm_dmirror0: %s; run with "
			"LD_PRELOAD=libhetmm-dmirror.so\n", strerror(errno));
		exit(1);
	}
	close(fd);
}

/* Commands the driver refuses, with the driver's errno. */
static void bad_commands(void)
{
	int fd = open_dm(0);
	REQUIRE(fd >= 0);
	char *p = t_map(4);
	char *buf = malloc(4 * PS);
	struct shim_dmirror_cmd c;
	REQUIRE(buf);

	/* The driver reads the command block before it looks at the
	 * command: an unknown one is -EINVAL, unless the block is bad. */
	memset(&c, 0, sizeof(c));
	c.addr = (uintptr_t)p;
	c.npages = 1;
	CHECK_EQ(ioctl(fd, _IO('H', 0x42), &c), -1);
	CHECK_EQ(errno, EINVAL);
	CHECK_EQ(ioctl(fd, _IO('H', 0x42), 0), -1);
	CHECK_EQ(errno, EFAULT);
	CHECK_EQ(ioctl(fd, SHIM_DMIRROR_READ, (void *)8), -1);
	CHECK_EQ(errno, EFAULT);                           /* bad block */
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_READ, p + 1, buf, 1, &c), -EINVAL);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_READ, p, buf, 0, &c), -EINVAL);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_READ, (void *)(uintptr_t)-PS, buf,
			2, &c), -EINVAL);                  /* wraps */
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_READ, p, (void *)8, 1, &c), -EFAULT);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_WRITE, p, (void *)8, 1, &c),
		 -EFAULT);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_SNAPSHOT, p, (void *)8, 1, &c),
		 -EFAULT);
	/* The VFS's own requests still work on the descriptor. */
	CHECK_EQ(ioctl(fd, FIOCLEX), 0);
	/* gup_test has no mmap, the dmirror no such request. */
	int g = open("/sys/kernel/debug/gup_test", O_RDWR);
	REQUIRE(g >= 0);
	CHECK(mmap(NULL, PS, PROT_READ, MAP_SHARED, g, 0) == MAP_FAILED);
	CHECK_EQ(errno, ENODEV);
	CHECK_EQ(ioctl(g, _IO('g', 99), 0), -1);
	CHECK_EQ(errno, EINVAL);
	close(g);
	free(buf);
	munmap(p, 4 * PS);
	CHECK_EQ(close(fd), 0);
	CHECK_EQ(close(fd), -1);
	CHECK_EQ(errno, EBADF);
}

/* Read, write, migrate there and back, snapshot; counts as the driver's. */
static void round_trip(void)
{
	enum { N = 16 };
	int fd = open_dm(0);
	REQUIRE(fd >= 0);
	char *p = t_map(N);
	char *buf = malloc(N * PS);
	uint8_t prot[N];
	struct shim_dmirror_cmd c;
	REQUIRE(buf);

	t_fill(p, N, 11);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_READ, p, buf, N, &c), 0);
	CHECK_EQ(c.cpages, N);
	CHECK_EQ(c.faults, 1);
	CHECK_EQ(t_verify(buf, N, 11), 0);

	t_fill(buf, N, 12);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_WRITE, p, buf, N, &c), 0);
	CHECK_EQ(c.cpages, N);
	CHECK_EQ(t_verify(p, N, 12), 0);

	memset(buf, 0, N * PS);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_DEV, p, buf, N, &c), 0);
	CHECK_EQ(c.cpages, N);
	CHECK_EQ(t_verify(buf, N, 12), 0);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_SNAPSHOT, p, prot, N, &c), 0);
	CHECK_EQ(c.cpages, N);
	for (int i = 0; i < N; i++)
		CHECK_EQ(prot[i], HETMM_PROT_DEV_PRIVATE_LOCAL |
				  HETMM_PROT_WRITE);

	/* Another device sees them as not present and can't take them. */
	int fd1 = open_dm(1);
	REQUIRE(fd1 >= 0);
	CHECK_EQ(dm_cmd(fd1, SHIM_DMIRROR_SNAPSHOT, p, prot, 1, &c), 0);
	CHECK_EQ(prot[0], HETMM_PROT_NONE);
	CHECK_EQ(dm_cmd(fd1, SHIM_DMIRROR_MIGRATE_TO_DEV, p, buf, 1, &c),
		 -ENOENT);
	/* ... nor bring them back: only the owner selects its pages. */
	CHECK_EQ(dm_cmd(fd1, SHIM_DMIRROR_MIGRATE_TO_SYS, p, buf, N, &c), 0);
	CHECK_EQ(c.cpages, 0);

	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_SYS, p, buf, N, &c), 0);
	CHECK_EQ(c.cpages, N);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_SNAPSHOT, p, prot, N, &c), 0);
	for (int i = 0; i < N; i++)
		CHECK_EQ(prot[i], HETMM_PROT_WRITE);
	CHECK_EQ(t_verify(p, N, 12), 0);

	/* Holes and inaccessible memory are the driver's -EINVAL. */
	REQUIRE(mprotect(p, PS, PROT_NONE) == 0);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_DEV, p, buf, 2, &c),
		 -EINVAL);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_SYS, p, buf, 2, &c),
		 -EINVAL);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_READ, p, buf, 2, &c), -EFAULT);

	/* Closing a description gives its device's memory back. */
	REQUIRE(mprotect(p, PS, PROT_READ | PROT_WRITE) == 0);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_DEV, p, buf, N, &c), 0);
	CHECK_EQ(close(fd), 0);
	CHECK_EQ(dm_cmd(fd1, SHIM_DMIRROR_SNAPSHOT, p, prot, N, &c), 0);
	for (int i = 0; i < N; i++)
		CHECK_EQ(prot[i], HETMM_PROT_WRITE);
	CHECK_EQ(t_verify(p, N, 12), 0);
	close(fd1);
	free(buf);
	munmap(p, N * PS);
}

/* Device atomics: held until the CPU touches the pages. */
static void exclusive(void)
{
	enum { N = 4 };
	int fd = open_dm(0);
	REQUIRE(fd >= 0);
	char *p = t_map(N);
	char *buf = malloc(N * PS);
	struct shim_dmirror_cmd c;
	REQUIRE(buf);
	t_fill(p, N, 21);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_EXCLUSIVE, p, buf, N, &c), 0);
	CHECK_EQ(c.cpages, N);
	CHECK_EQ(t_verify(buf, N, 21), 0);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_CHECK_EXCLUSIVE, p, buf, N, &c),
		 -EPERM);
	CHECK_EQ(t_verify(p, N, 21), 0);        /* the CPU reads them */
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_CHECK_EXCLUSIVE, p, buf, N, &c), 0);
	/* A device write ends the hold through a fault, which checks the
	 * mapping as it is now. */
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_EXCLUSIVE, p, buf, N, &c), 0);
	REQUIRE(mprotect(p, N * PS, PROT_READ) == 0);
	t_fill(buf, N, 22);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_WRITE, p, buf, N, &c), -EPERM);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_CHECK_EXCLUSIVE, p, buf, N, &c), 0);
	CHECK_EQ(t_verify(p, N, 21), 0);
	REQUIRE(mprotect(p, N * PS, PROT_READ | PROT_WRITE) == 0);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_EXCLUSIVE, p, buf, N, &c), 0);
	t_fill(buf, N, 23);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_WRITE, p, buf, N, &c), 0);
	CHECK_EQ(c.faults, 1);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_CHECK_EXCLUSIVE, p, buf, N, &c), 0);
	CHECK_EQ(t_verify(p, N, 23), 0);
	/* Fork gives held pages back first: both sides see their data. */
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_EXCLUSIVE, p, buf, N, &c), 0);
	fflush(NULL);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0)
		_exit(t_verify(p, N, 23) ? 1 : 0);
	t_reap(pid);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_CHECK_EXCLUSIVE, p, buf, N, &c), 0);
	CHECK_EQ(t_verify(p, N, 23), 0);
	/* Shared memory can't be held that way. */
	char *s = mmap(NULL, PS, PROT_READ | PROT_WRITE,
		       MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	REQUIRE(s != MAP_FAILED);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_EXCLUSIVE, s, buf, 1, &c), -EBUSY);
	munmap(s, PS);
	free(buf);
	munmap(p, N * PS);
	close(fd);
}

/* A descriptor is a real one: dup, and the description lives on. */
static void descriptors(void)
{
	enum { N = 2 };
	int fd = open_dm(0);
	REQUIRE(fd >= 0);
	struct stat st;
	CHECK_EQ(fstat(fd, &st), 0);
	int fd2 = dup(fd);
	REQUIRE(fd2 >= 0);
	char *p = t_map(N);
	char *buf = malloc(N * PS);
	struct shim_dmirror_cmd c;
	REQUIRE(buf);
	fill_to_dev(fd, p, N, 31, buf);
	CHECK_EQ(close(fd), 0);
	/* Still open through the dup: the pages stay on the device. */
	uint8_t prot[N];
	CHECK_EQ(dm_cmd(fd2, SHIM_DMIRROR_SNAPSHOT, p, prot, N, &c), 0);
	CHECK_EQ(prot[0], HETMM_PROT_DEV_PRIVATE_LOCAL | HETMM_PROT_WRITE);
	CHECK_EQ(close(fd2), 0);
	CHECK_EQ(t_verify(p, N, 31), 0);

	/* mmap of the device: fresh zero pages, read-only until written. */
	fd = open_dm(1);
	REQUIRE(fd >= 0);
	char *m = mmap(NULL, N * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd,
		       0);
	REQUIRE(m != MAP_FAILED);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_SNAPSHOT, m, prot, N, &c), 0);
	CHECK_EQ(prot[0], HETMM_PROT_READ);
	CHECK_EQ(m[0], 0);
	m[PS] = 1;
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_SNAPSHOT, m, prot, N, &c), 0);
	CHECK_EQ(prot[1], HETMM_PROT_WRITE);
	CHECK(mmap(NULL, PS, PROT_READ, MAP_PRIVATE, fd, 1) == MAP_FAILED);
	CHECK_EQ(errno, EINVAL);
	munmap(m, N * PS);
	close(fd);

	/* Coherent devices need hetmm's coherent memory; until then they
	 * are not there, as on a kernel without it. */
	fd = open_dm(2);
	if (fd < 0)
		CHECK_EQ(errno, ENOENT);
	else
		close(fd);
	CHECK_EQ(open("/dev/hmm_dmirror9", O_RDWR), -1);
	free(buf);
	munmap(p, N * PS);
}

/* A child mirrors its own memory through its own open. */
static void child(void)
{
	enum { N = 4 };
	int fd = open_dm(0);
	REQUIRE(fd >= 0);
	char *p = t_map(N);
	char *buf = malloc(N * PS);
	REQUIRE(buf);
	t_fill(p, N, 41);
	fflush(NULL);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		struct shim_dmirror_cmd c;
		int ok = 1;
		/* The parent's description mirrors the parent's memory. */
		ok &= dm_cmd(fd, SHIM_DMIRROR_READ, p, buf, N, &c) == -EINVAL;
		int cfd = open_dm(0);
		ok &= cfd >= 0;
		t_fill(buf, N, 42);
		ok &= dm_cmd(cfd, SHIM_DMIRROR_WRITE, p, buf, N, &c) == 0;
		ok &= c.faults == 1;
		ok &= t_verify(p, N, 42) == 0;
		ok &= close(cfd) == 0;
		_exit(ok ? 0 : 1);
	}
	t_reap(pid);
	CHECK_EQ(t_verify(p, N, 41), 0);       /* copy-on-write */
	struct shim_dmirror_cmd c;
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_READ, p, buf, N, &c), 0);
	CHECK_EQ(t_verify(buf, N, 41), 0);
	close(fd);
	free(buf);
	munmap(p, N * PS);
}

/* gup_test: device pages come back when taken. */
static void gup(void)
{
	enum { N = 4 };
	int fd = open_dm(0);
	int g = open("/sys/kernel/debug/gup_test", O_RDWR);
	REQUIRE(fd >= 0 && g >= 0);
	char *p = t_map(N);
	char *buf = malloc(N * PS);
	uint8_t prot[N];
	struct shim_dmirror_cmd c;
	REQUIRE(buf);
	fill_to_dev(fd, p, N, 51, buf);
	struct shim_gup_test gt = {
		.addr = (uintptr_t)p,
		.size = N * PS,
		.nr_pages_per_call = 1,
		.gup_flags = SHIM_FOLL_WRITE,
	};
	CHECK_EQ(ioctl(g, SHIM_PIN_LONGTERM_BENCHMARK, &gt), 0);
	CHECK_EQ(gt.size, N * PS);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_SNAPSHOT, p, prot, N, &c), 0);
	for (int i = 0; i < N; i++)
		CHECK_EQ(prot[i], HETMM_PROT_WRITE);
	CHECK_EQ(t_verify(p, N, 51), 0);
	/* It stops at the first page it can't take. */
	REQUIRE(mprotect(p + 2 * PS, 2 * PS, PROT_NONE) == 0);
	gt.size = N * PS;
	CHECK_EQ(ioctl(g, SHIM_GUP_BASIC_TEST, &gt), 0);
	CHECK_EQ(gt.size, 2 * PS);
	CHECK_EQ(ioctl(g, SHIM_GUP_BASIC_TEST, (void *)8), -1);
	CHECK_EQ(errno, EFAULT);
	close(g);
	close(fd);
	free(buf);
	munmap(p, N * PS);
}

/* FOLL_LONGTERM in 6.2's encoding (0x100) as in 6.1's (0x10000): a fast
 * pin with it takes a page off coherent memory too, a plain one leaves it
 * there (hmm-tests' hmm_gup_test, built for either). */
static void gup_longterm_encodings(void)
{
	enum { N = 3 };
	int fd = open_dm(2);
	int g = open("/sys/kernel/debug/gup_test", O_RDWR);
	REQUIRE(fd >= 0 && g >= 0);
	char *p = t_map(N);
	char *buf = malloc(N * PS);
	uint8_t prot[N];
	struct shim_dmirror_cmd c;
	REQUIRE(buf);
	fill_to_dev(fd, p, N, 52, buf);
	const uint32_t flags[N] = { 0, SHIM_FOLL_LONGTERM,
				    SHIM_FOLL_LONGTERM_6_1 };
	for (int i = 0; i < N; i++) {
		struct shim_gup_test gt = {
			.addr = (uintptr_t)(p + i * PS),
			.size = PS,
			.nr_pages_per_call = 1,
			.gup_flags = SHIM_FOLL_WRITE | flags[i],
		};
		CHECK_EQ(ioctl(g, SHIM_PIN_FAST_BENCHMARK, &gt), 0);
	}
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_SNAPSHOT, p, prot, N, &c), 0);
	CHECK_EQ(prot[0], HETMM_PROT_DEV_COHERENT_LOCAL | HETMM_PROT_WRITE);
	CHECK_EQ(prot[1], HETMM_PROT_WRITE);
	CHECK_EQ(prot[2], HETMM_PROT_WRITE);
	CHECK_EQ(t_verify(p, N, 52), 0);
	close(g);
	close(fd);
	free(buf);
	munmap(p, N * PS);
}

/* HMM_DMIRROR_FLAGS: taken (any word, as the driver stores it), and a
 * migration with FAIL_ALLOC set goes as the driver's fallback does: every
 * page moved, both ways, bytes intact. */
static void dmirror_flags(void)
{
	enum { N = 8 };
	int fd = open_dm(0);
	REQUIRE(fd >= 0);
	char *p = t_map(N);
	char *buf = malloc(N * PS);
	struct shim_dmirror_cmd c;
	REQUIRE(buf);
	t_fill(p, N, 53);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_FLAGS, p, NULL, ~0ull >> 20, &c), 0);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_FLAGS, p, NULL,
			SHIM_DMIRROR_FLAG_FAIL_ALLOC, &c), 0);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_DEV, p, buf, N, &c), 0);
	CHECK_EQ(c.cpages, N);
	CHECK_EQ(t_verify(buf, N, 53), 0);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_FLAGS, p, NULL,
			SHIM_DMIRROR_FLAG_FAIL_ALLOC, &c), 0);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_SYS, p, buf, N, &c), 0);
	CHECK_EQ(c.cpages, N);
	CHECK_EQ(t_verify(p, N, 53), 0);
	/* The driver's checks come first, as for every command. */
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_FLAGS, p + 1, NULL, 1, &c), -EINVAL);
	close(fd);
	free(buf);
	munmap(p, N * PS);
}

static int lt_start(int g, void *addr, size_t size, uint32_t flags)
{
	struct shim_pin_longterm_test t = { (uintptr_t)addr, size, flags };
	return ioctl(g, SHIM_PIN_LONGTERM_TEST_START, &t) ? -errno : 0;
}

/*
 * The long-term pin test: START pins until STOP, one test at a time, with
 * the kernel's errors; pinned pages stay off the device; READ gives their
 * bytes; a shared mapping of a file that is written back refuses a
 * long-term pin for writing, tmpfs and private mappings take it.
 */
static void pin_longterm_test(void)
{
	enum { N = 4 };
	const uint32_t W = SHIM_PIN_LONGTERM_FLAG_USE_WRITE;
	const uint32_t F = SHIM_PIN_LONGTERM_FLAG_USE_FAST;
	int fd = open_dm(0);
	int g = open("/sys/kernel/debug/gup_test", O_RDWR);
	REQUIRE(fd >= 0 && g >= 0);
	char *p = t_map(N);
	char *buf = malloc(N * PS);
	uint64_t dst = (uintptr_t)buf;
	struct shim_dmirror_cmd c;
	REQUIRE(buf);
	t_fill(p, N, 54);

	/* Nothing to read or stop yet; bad ranges and flags. */
	CHECK_EQ(ioctl(g, SHIM_PIN_LONGTERM_TEST_READ, &dst), -1);
	CHECK_EQ(errno, EINVAL);
	CHECK_EQ(ioctl(g, SHIM_PIN_LONGTERM_TEST_STOP), 0);
	CHECK_EQ(lt_start(g, p, 0, 0), -EINVAL);
	CHECK_EQ(lt_start(g, p + 1, PS, 0), -EINVAL);
	CHECK_EQ(lt_start(g, p, PS, 4), -EINVAL);
	CHECK_EQ(ioctl(g, SHIM_PIN_LONGTERM_TEST_START, (void *)8), -1);
	CHECK_EQ(errno, EFAULT);

	/* Device pages come back and stay: the pinned range won't move. */
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_DEV, p, buf, N, &c), 0);
	CHECK_EQ(lt_start(g, p, N * PS, W | F), 0);
	CHECK_EQ(lt_start(g, p, N * PS, 0), -EINVAL);   /* one at a time */
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_DEV, p, buf, N, &c),
		 -ENOENT);
	memset(buf, 0, N * PS);
	CHECK_EQ(ioctl(g, SHIM_PIN_LONGTERM_TEST_READ, &dst), 0);
	CHECK_EQ(t_verify(buf, N, 54), 0);
	CHECK_EQ(ioctl(g, SHIM_PIN_LONGTERM_TEST_STOP), 0);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_DEV, p, buf, N, &c), 0);
	CHECK_EQ(t_verify(p, N, 54), 0);

	/* A file on this build's filesystem, shared: a long-term pin for
	 * writing only where that filesystem has no writeback. */
	char path[] = "test_shim_pin.XXXXXX";
	int file = mkstemp(path);
	REQUIRE(file >= 0 && !unlink(path) && !ftruncate(file, N * PS));
	struct statfs st;
	REQUIRE(!fstatfs(file, &st));
	bool tmpfs = (uint32_t)st.f_type == 0x01021994;
	char *shared = mmap(NULL, N * PS, PROT_READ | PROT_WRITE, MAP_SHARED,
			    file, 0);
	char *priv = mmap(NULL, N * PS, PROT_READ | PROT_WRITE, MAP_PRIVATE,
			  file, 0);
	REQUIRE(shared != MAP_FAILED && priv != MAP_FAILED);
	CHECK_EQ(lt_start(g, shared, N * PS, W), tmpfs ? 0 : -EFAULT);
	CHECK_EQ(ioctl(g, SHIM_PIN_LONGTERM_TEST_STOP), 0);
	CHECK_EQ(lt_start(g, shared, N * PS, W | F), tmpfs ? 0 : -EFAULT);
	CHECK_EQ(ioctl(g, SHIM_PIN_LONGTERM_TEST_STOP), 0);
	CHECK_EQ(lt_start(g, shared, N * PS, 0), 0);       /* read only */
	CHECK_EQ(ioctl(g, SHIM_PIN_LONGTERM_TEST_STOP), 0);
	CHECK_EQ(lt_start(g, priv, N * PS, W), 0);         /* private */
	CHECK_EQ(ioctl(g, SHIM_PIN_LONGTERM_TEST_STOP), 0);
	/* A memfd (shmem) takes it. */
	int mfd = memfd_create("test_shim_pin", MFD_CLOEXEC);
	REQUIRE(mfd >= 0 && !ftruncate(mfd, N * PS));
	char *shm = mmap(NULL, N * PS, PROT_READ | PROT_WRITE, MAP_SHARED,
			 mfd, 0);
	REQUIRE(shm != MAP_FAILED);
	CHECK_EQ(lt_start(g, shm, N * PS, W), 0);
	CHECK_EQ(ioctl(g, SHIM_PIN_LONGTERM_TEST_STOP), 0);

	munmap(shm, N * PS);
	munmap(shared, N * PS);
	munmap(priv, N * PS);
	close(mfd);
	close(file);
	close(g);
	close(fd);
	free(buf);
	munmap(p, N * PS);
}

/*
 * madvise(MADV_FREE) over a private anonymous range holding coherent
 * pages: taken, as the kernel takes it there.  Each page then reads as
 * its bytes or as zeroes (freed), and a write after it sticks.  A range
 * with a file mapping in it fails with EINVAL, one with a hole with
 * ENOMEM, as the kernel fails them.
 */
static void madvise_free_coherent(void)
{
	enum { N = 8 };
	int fd = open_dm(2);
	REQUIRE(fd >= 0);
	char *p = t_map(N + 1);
	char *want = malloc(N * PS);
	char *buf = malloc(N * PS);
	char *zero = calloc(1, PS);
	struct shim_dmirror_cmd c;
	REQUIRE(want && buf && zero);
	t_fill(p, N, 55);
	t_fill(want, N, 55);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_DEV, p + PS, buf, N - 2,
			&c), 0);
	CHECK_EQ(madvise(p, N * PS, MADV_FREE), 0);
	for (int i = 0; i < N; i++)
		CHECK(!memcmp(p + i * PS, want + i * PS, PS) ||
		      !memcmp(p + i * PS, zero, PS));
	t_fill(p, N, 56);
	CHECK_EQ(t_verify(p, N, 56), 0);

	/* A shared file mapping after the coherent pages: EINVAL. */
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_DEV, p, buf, N, &c), 0);
	int mfd = memfd_create("test_shim_free", MFD_CLOEXEC);
	REQUIRE(mfd >= 0 && !ftruncate(mfd, PS));
	REQUIRE(mmap(p + N * PS, PS, PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_FIXED, mfd, 0) == p + N * PS);
	CHECK_EQ(madvise(p, (N + 1) * PS, MADV_FREE), -1);
	CHECK_EQ(errno, EINVAL);
	/* A hole there: ENOMEM. */
	REQUIRE(munmap(p + N * PS, PS) == 0);
	CHECK_EQ(madvise(p, (N + 1) * PS, MADV_FREE), -1);
	CHECK_EQ(errno, ENOMEM);
	close(mfd);
	close(fd);
	free(want);
	free(buf);
	free(zero);
	munmap(p, N * PS);
}

/*
 * A 2 MiB range of coherent pages moves with one mremap(), as the
 * kernel's does, even after earlier ranges' frames were freed in pieces
 * (partial munmaps): the frames come back as one run, so the range is one
 * mapping (hmm-tests' migrate_partial_unmap_fault, then
 * migrate_remap_fault, in one process).  The range starts off a chunk
 * boundary, as an anonymous mapping does on kernels that do not align
 * large ones (6.1): it migrates as two chunks, mapped in two pieces that
 * must merge.
 */
static void coherent_remap_after_partial_unmaps(void)
{
	enum { N = 512 };
	int fd = open_dm(2);
	REQUIRE(fd >= 0);
	char *buf = malloc(N * PS);
	REQUIRE(buf);
	for (size_t off = 0; off <= N / 2; off += N / 4) {
		char *p = t_map(N);
		fill_to_dev(fd, p, N, 57, buf);
		REQUIRE(munmap(p + off * PS, N / 2 * PS) == 0);
		CHECK_EQ(t_verify(p, off, 57), 0);
		REQUIRE(munmap(p, N * PS) == 0);
	}
	char *p = t_map_chunk_at(3 * N, N - N / 8);
	REQUIRE(munmap(p + N * PS, 2 * N * PS) == 0);
	fill_to_dev(fd, p, N, 58, buf);
	char *to = mremap(p, N * PS, N * PS, MREMAP_MAYMOVE | MREMAP_FIXED,
			  p + (N + N / 4) * PS);
	CHECK(to != MAP_FAILED);
	if (to != MAP_FAILED) {
		CHECK_EQ(t_verify(to, N, 58), 0);
		munmap(to, N * PS);
	} else {
		munmap(p, N * PS);
	}
	close(fd);
	free(buf);
}

/* ------------------------------------------------------------------------
 * Device memory, as much as the kernel's driver has (lib/test_hmm.c): it
 * adds 256 MiB chunks to a device-private unit whenever one runs short,
 * with no cap but memory, while a device-coherent unit keeps the one chunk
 * of special-purpose memory it starts with.  A migration that outgrows
 * the device moves what fits, and the device's read back then fails with
 * -ENOENT.
 */

#define CHUNK (((size_t)256 << 20) / PS)

/*
 * Pages of [p, p + n) whose snapshot is want.  A PMD-aligned block the
 * range holds whole may be a transparent huge page (THP "always",
 * Debian's default, gives one on the first touch), in memory or on the
 * device as one huge page, which the kernel's dmirror reports with
 * HMM_DMIRROR_PROT_PMD on each of its pages: such a block counts when
 * every one of its pages is want | HETMM_PROT_PMD.  A PMD bit on part of
 * a block, or on a block the range does not hold whole, counts wrong.
 */
static size_t count_prot(const uint8_t *prot, const char *p, size_t n,
			 uint8_t want)
{
	const size_t npmd = PS / 8;   /* a page table's 8-byte entries */
	size_t k = 0;
	for (size_t i = 0; i < n;) {
		size_t in_block = ((uintptr_t)p / PS + i) % npmd;
		size_t run = npmd - in_block < n - i ? npmd - in_block : n - i;
		size_t plain = 0, huge = 0;
		for (size_t j = i; j < i + run; j++) {
			plain += prot[j] == want;
			huge += prot[j] == (want | HETMM_PROT_PMD);
		}
		k += run == npmd && huge == npmd ? npmd : plain;
		i += run;
	}
	return k;
}

/* Two chunks' worth, 512 MiB, moves whole to a private device; the CPU
 * then faults every page back, byte for byte. */
static void private_two_chunks(void)
{
	const size_t n = 2 * CHUNK;
	int fd = open_dm(0);
	REQUIRE(fd >= 0);
	char *p = t_map(n);
	char *buf = t_map(n);
	uint8_t *prot = malloc(n);
	struct shim_dmirror_cmd c;
	REQUIRE(prot);
	/* THPs where the kernel gives them on request, as "always" does
	 * without one: huge device pages, and back whole. */
	madvise(p, n * PS, MADV_HUGEPAGE);
	t_fill(p, n, 61);

	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_DEV, p, buf, n, &c), 0);
	CHECK_EQ(c.cpages, n);
	CHECK_EQ(t_verify(buf, n, 61), 0);       /* the device's read back */
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_SNAPSHOT, p, prot, n, &c), 0);
	CHECK_EQ(count_prot(prot, p, n, LOCAL_RW), n);
	/* Out of the CPU's page tables, both chunks. */
	CHECK_EQ(t_present(p), 0);
	CHECK_EQ(t_present(p + (n - 1) * PS), 0);
	CHECK_EQ(t_verify(p, n, 61), 0);         /* every page faults back */
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_SNAPSHOT, p, prot, n, &c), 0);
	CHECK_EQ(count_prot(prot, p, n, HETMM_PROT_WRITE), n);
	free(prot);
	t_unmap(buf, n);
	t_unmap(p, n);
	close(fd);
}

/*
 * Seventeen chunks, 4.25 GiB, on one private device at once: past the 16
 * chunks of the driver's first chunk table, which it grows rather than
 * stops at.  Mostly holes, which the device takes as zero pages at no cost
 * in memory, with one written page every 2 MiB; migrated a chunk per call
 * so that the read-back buffer is one chunk.
 */
static void private_past_sixteen_chunks(void)
{
	enum { STRIDE = 512 };                   /* 2 MiB */
	const size_t chunks = 17, n = chunks * CHUNK, stride = STRIDE;
	int fd = open_dm(0);
	REQUIRE(fd >= 0);
	char *p = t_map(n);
	char *buf = t_map(CHUNK);
	uint8_t *prot = malloc(n);
	struct shim_dmirror_cmd c;
	REQUIRE(prot);
	for (size_t i = 0; i < n; i += stride)
		t_fill_from(p + i * PS, 1, 62, i);

	for (size_t k = 0; k < chunks; k++) {
		size_t first = k * CHUNK;
		int rc = dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_DEV,
				p + first * PS, buf, CHUNK, &c);
		CHECK_EQ(rc, 0);
		CHECK_EQ(c.cpages, CHUNK);
		if (rc)
			break;
		for (size_t i = 0; i < CHUNK; i += stride)
			CHECK_EQ(t_verify_from(buf + i * PS, 1, 62, first + i),
				 0);
	}
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_SNAPSHOT, p, prot, n, &c), 0);
	CHECK_EQ(count_prot(prot, p, n, LOCAL_RW), n);
	CHECK_EQ(t_present(p + (n - stride) * PS), 0);
	/* Every byte back through the CPU: the written pages and the
	 * zeroes. */
	char *zeroes = calloc(STRIDE - 1, PS);
	REQUIRE(zeroes);
	size_t bad = 0, nonzero = 0;
	for (size_t i = 0; i < n; i += stride) {
		bad += t_verify_from(p + i * PS, 1, 62, i);
		nonzero += !!memcmp(p + (i + 1) * PS, zeroes,
				    (STRIDE - 1) * PS);
	}
	CHECK_EQ(bad, 0);
	CHECK_EQ(nonzero, 0);
	free(zeroes);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_SNAPSHOT, p, prot, n, &c), 0);
	CHECK_EQ(count_prot(prot, p, n, LOCAL_RW), 0);
	free(prot);
	t_unmap(buf, CHUNK);
	t_unmap(p, n);
	close(fd);
}

/* A coherent device has one chunk: a chunk's worth of pages moves, the
 * page after it does not. */
static void coherent_one_chunk(void)
{
	const size_t n = CHUNK + 1;
	int fd = open_dm(2);
	if (fd < 0) {
		CHECK_EQ(errno, ENOENT);   /* a build without coherent memory */
		return;
	}
	char *p = t_map(n);
	char *buf = t_map(n);
	uint8_t *prot = malloc(n);
	struct shim_dmirror_cmd c;
	REQUIRE(prot);
	t_fill(p, n, 63);

	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_DEV, p, buf, n, &c),
		 -ENOENT);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_SNAPSHOT, p, prot, n, &c), 0);
	CHECK_EQ(count_prot(prot, p, n, HETMM_PROT_DEV_COHERENT_LOCAL |
					 HETMM_PROT_WRITE), CHUNK);
	CHECK_EQ(count_prot(prot, p, n, HETMM_PROT_WRITE), 1);
	CHECK_EQ(t_verify(p, n, 63), 0);         /* in place, every byte */
	/* Full: nothing more moves, and the device says so the same way. */
	size_t rest = 0;
	while (rest < n && prot[rest] != HETMM_PROT_WRITE)
		rest++;
	REQUIRE(rest < n);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_DEV, p + rest * PS, buf,
			1, &c), -ENOENT);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_SYS, p, buf, n, &c), 0);
	CHECK_EQ(c.cpages, CHUNK);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_SNAPSHOT, p, prot, n, &c), 0);
	CHECK_EQ(count_prot(prot, p, n, HETMM_PROT_WRITE), n);
	CHECK_EQ(t_verify(p, n, 63), 0);
	free(prot);
	t_unmap(buf, n);
	t_unmap(p, n);
	close(fd);               /* the release gives the chunk back */
}

/*
 * HETMM_DMIRROR_PAGES sizes the devices of a process that has none yet
 * (here a child, whose devices are its own): a private device of 8 pages
 * given 12 takes 8 and fails the read back, as the kernel's does when it
 * can't get memory for more.
 */
enum { SIZED_CAP = 8, SIZED_N = 12 };

static void sized_child(void *arg)
{
	char *p = arg;
	char buf[SIZED_N * PS];
	uint8_t prot[SIZED_N];
	struct shim_dmirror_cmd c;
	char cap[16];
	snprintf(cap, sizeof(cap), "%d", SIZED_CAP);
	REQUIRE(setenv("HETMM_DMIRROR_PAGES", cap, 1) == 0);
	int fd = open_dm(0);
	REQUIRE(fd >= 0);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_DEV, p, buf, SIZED_N, &c),
		 -ENOENT);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_SNAPSHOT, p, prot, SIZED_N, &c), 0);
	CHECK_EQ(count_prot(prot, p, SIZED_N, LOCAL_RW), SIZED_CAP);
	CHECK_EQ(t_verify(p, SIZED_N, 64), 0);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_DEV, p, buf, SIZED_CAP,
			&c), 0);
	CHECK_EQ(close(fd), 0);
}

static void sized_by_environment(void)
{
	char *p = t_map(SIZED_N);
	t_fill(p, SIZED_N, 64);
	t_reap(t_spawn(sized_child, p));
	CHECK_EQ(t_verify(p, SIZED_N, 64), 0);
	t_unmap(p, SIZED_N);
}

/* Everything else is the next definition's. */
static void pass_through(void)
{
	int fds[2];
	REQUIRE(pipe(fds) == 0);
	CHECK_EQ(write(fds[1], "abc", 3), 3);
	int n = -1;
	CHECK_EQ(ioctl(fds[0], FIONREAD, &n), 0);
	CHECK_EQ(n, 3);
	CHECK_EQ(close(fds[0]), 0);
	CHECK_EQ(close(fds[1]), 0);
	int fd = open("/dev/null", O_RDONLY);
	CHECK(fd >= 0);
	CHECK_EQ(ioctl(fd, SHIM_DMIRROR_READ, NULL), -1);
	CHECK_EQ(errno, ENOTTY);
	close(fd);
	CHECK_EQ(open("/nonexistent/x", O_RDONLY), -1);
	CHECK_EQ(errno, ENOENT);
}

/*
 * Commands over a huge range end where the driver's would, at once: it
 * works 64 pages at a time, so a SNAPSHOT into a short buffer stops with
 * EFAULT at the first piece that does not fit, a MIGRATE_TO_SYS with
 * EINVAL at the first hole, after the pages before it moved, and a
 * CHECK_EXCLUSIVE looks at the held pages only.  Fuzzer finding F4: the
 * shim snapshotted the whole range first, a byte of memory and a slice
 * of time a page, minutes for these 2^32 pages.  The alarm makes a hang
 * a failure long before the suite's timeout.
 */
#define HUGE_WATCHDOG_S 30

static void huge_watchdog(int sig)
{
	static const char msg[] = "huge_npages: a command over 2^32 pages took"
				  " more than the watchdog's 30 s\n";
	(void)sig;
	(void)!write(2, msg, sizeof(msg) - 1);
	_exit(1);
}

static void huge_npages(void)
{
	enum { N = 256, DEV = 64, WRITTEN = 128 };
	/* Low enough that 2^32 pages from it stay in the user half, which
	 * the driver would walk; above it nothing is mapped for a while
	 * (and ASan's shadow is below it).  ThreadSanitizer keeps its
	 * shadow there and drops the hint (the kernel then maps near the
	 * top of the user half, with fewer than 2^28 pages left above): the
	 * start of the range it leaves to modules instead, 6 TiB below the
	 * top in its newer layout (clang's), 1.5 TiB in its older (gcc 12's
	 * libtsan). */
	static const uintptr_t hints[] = { 1ULL << 45, 0x7a0000000000ULL,
					   0x7e8000000000ULL };
	char *p = MAP_FAILED;
	for (size_t h = 0; h < 3 && p == MAP_FAILED; h++) {
		p = mmap((void *)hints[h], N * PS, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p != MAP_FAILED && p != (char *)hints[h] && h < 2) {
			munmap(p, N * PS);
			p = MAP_FAILED;
		}
	}
	REQUIRE(p != MAP_FAILED);
	/* 2^32 pages, or where a sanitizer keeps the hint from us as many
	 * as fit below the top of the user half (2^28 or more). */
	uint64_t huge = 1ULL << 32;
	while ((uintptr_t)p + huge * PS > (1ULL << 47))
		huge >>= 1;
	REQUIRE(huge >= (1ULL << 28));
	/* A one-page buffer with nothing writable after it. */
	uint8_t *out = mmap(NULL, 2 * PS, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(out != MAP_FAILED);
	REQUIRE(mprotect(out + PS, PS, PROT_NONE) == 0);
	char *buf = malloc(DEV * PS);
	REQUIRE(buf);
	int fd = open_dm(0);
	REQUIRE(fd >= 0);
	struct shim_dmirror_cmd c;

	t_fill(p, WRITTEN, 41);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_DEV, p, buf, DEV, &c), 0);

	signal(SIGALRM, huge_watchdog);
	alarm(HUGE_WATCHDOG_S);
	double t0 = t_now();
	memset(out, 0xee, PS);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_SNAPSHOT, p, out, huge, &c), -EFAULT);
	/* What fit is the snapshot of the range's first PS pages. */
	size_t bad = 0;
	for (size_t i = 0; i < PS; i++) {
		uint8_t want = i < DEV ? (HETMM_PROT_DEV_PRIVATE_LOCAL |
					  HETMM_PROT_WRITE) :
			       i < WRITTEN ? HETMM_PROT_WRITE :
			       i < N ? HETMM_PROT_NONE : HETMM_PROT_ERROR;
		bad += out[i] != want;
	}
	CHECK_EQ(bad, 0);

	/* Held pages: found among 2^32 without looking at each. */
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_EXCLUSIVE, p + DEV * PS, buf, 4, &c),
		 0);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_CHECK_EXCLUSIVE, p, buf, huge, &c),
		 -EPERM);
	CHECK_EQ(t_verify_from(p + DEV * PS, 4, 41, DEV), 0); /* CPU reads */
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_CHECK_EXCLUSIVE, p, buf, huge, &c),
		 0);

	/* The device's pages come back; the hole after them is EINVAL. */
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_MIGRATE_TO_SYS, p, buf, huge + 1, &c),
		 -EINVAL);
	alarm(0);
	signal(SIGALRM, SIG_DFL);
	printf("huge_npages: three commands over %llu pages in %.3f s\n",
	       (unsigned long long)huge, t_now() - t0);
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_SNAPSHOT, p, out, N, &c), 0);
	bad = 0;
	for (size_t i = 0; i < N; i++)
		bad += out[i] != (i < WRITTEN ? HETMM_PROT_WRITE
					      : HETMM_PROT_NONE);
	CHECK_EQ(bad, 0);
	CHECK_EQ(t_verify(p, WRITTEN, 41), 0);

	close(fd);
	free(buf);
	munmap(out, 2 * PS);
	munmap(p, N * PS);
}

/*
 * A process that exits with a device open and pages on it, as the
 * kernel's selftests do: exit handlers that run after the shim's (here
 * one registered before the first open) find the pages home and nothing
 * registered with a userfaultfd, whose handler will read no more.
 * LeakSanitizer's check is such a handler: it stops every thread, the
 * fault handler too, and reads every global and heap block, and it hung
 * on a missing page of registered memory (the shim's .bss, registered
 * with a mapping of the test's the kernel had merged it with).  Run in a
 * process of its own (this program again), whose exit handlers are its
 * own.
 */
enum { EXIT_N = 16 };
static char *exit_buf;

static bool vmflags_registered(const char *line)
{
	char copy[512];
	snprintf(copy, sizeof(copy), "%s", line + strlen("VmFlags:"));
	for (char *save, *t = strtok_r(copy, " \n", &save); t;
	     t = strtok_r(NULL, " \n", &save))
		if (!strcmp(t, "um") || !strcmp(t, "uw") || !strcmp(t, "ui"))
			return true;
	return false;
}

static void exit_late_check(void)
{
	size_t bad = t_verify(exit_buf, EXIT_N, 71);
	FILE *s = fopen("/proc/self/smaps", "r");
	char line[512], range[512] = "";
	REQUIRE(s);
	while (fgets(line, sizeof(line), s)) {
		if (strchr(line, '-') && strchr(line, ' ') &&
		    strchr(line, '-') < strchr(line, ' '))
			snprintf(range, sizeof(range), "%s", line);
		if (!strncmp(line, "VmFlags:", 8) && vmflags_registered(line)) {
			fprintf(stderr, "registered at exit: %s  %s", range,
				line);
			bad++;
		}
	}
	fclose(s);
	_exit(bad || __atomic_load_n(&t_failures, __ATOMIC_RELAXED) ? 1 : 0);
}

static int exit_child(void)
{
	REQUIRE(atexit(exit_late_check) == 0);
	int fd = open_dm(0);
	REQUIRE(fd >= 0);
	exit_buf = t_map(EXIT_N);
	char *buf = malloc(EXIT_N * PS);
	REQUIRE(buf);
	fill_to_dev(fd, exit_buf, EXIT_N, 71, buf);
	uint8_t prot[EXIT_N];
	struct shim_dmirror_cmd c;
	CHECK_EQ(dm_cmd(fd, SHIM_DMIRROR_SNAPSHOT, exit_buf, prot, EXIT_N, &c),
		 0);
	CHECK_EQ(count_prot(prot, exit_buf, EXIT_N, LOCAL_RW), EXIT_N);
	return 0;   /* fd open, pages on the device: exit() */
}

static void exit_lets_go(void)
{
	fflush(NULL);
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		execl("/proc/self/exe", "test_shim", "exit-child", (char *)NULL);
		_exit(127);
	}
	int st;
	REQUIRE(waitpid(pid, &st, 0) == pid);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "exit-child"))
		return exit_child();
	preloaded();
	bad_commands();
	round_trip();
	exclusive();
	descriptors();
	child();
	gup();
	gup_longterm_encodings();
	dmirror_flags();
	pin_longterm_test();
	madvise_free_coherent();
	coherent_remap_after_partial_unmaps();
	huge_npages();
	sized_by_environment();
	private_two_chunks();
	private_past_sixteen_chunks();
	coherent_one_chunk();
	pass_through();
	exit_lets_go();
	return t_done();
}

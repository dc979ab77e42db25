/* SPDX-License-Identifier: MIT */
/*
 * interpose.c - open, close, ioctl and mmap, and which file is whose.
 *
 * Opening one of the served paths gives a memfd of its own, which the
 * program holds like any descriptor.  Its inode names the open file
 * description: an ioctl, mmap or close on any descriptor of it (a dup, one
 * inherited over fork) finds the shim's state by fstat, and every other
 * call goes to the next definition (dlsym RTLD_NEXT) untouched.
 *
 * One hetmm context serves the process, created on the first open of a
 * dmirror device; each device is an emulated device of that context, each
 * open a mirror of it.  A child after fork starts without them: the
 * parent's context has no handler thread there, so the child builds its own
 * on its first open, and the descriptions it inherited stay the parent's
 * (their mirrors mirror the parent's memory, which the child can't reach:
 * their ioctls fail with EINVAL, as on a kernel whose mm has gone).
 *
 * Nothing here holds the process lock across a hetmm call that could wait
 * for the fault handler: the handler's own ioctls pass through this file.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "shim.h"

#define SHIM_EXPORT __attribute__((visibility("default")))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

/* ------------------------------------------------------------------------
 * The next definitions
 */

static void *next_sym(const char *name)
{
	return dlsym(RTLD_NEXT, name);
}

#define NEXT(type, name)                                                  \
	static type next_##name(void)                                     \
	{                                                                 \
		static _Atomic(type) fn;                                  \
		type f = atomic_load_explicit(&fn, memory_order_acquire); \
		if (!f) {                                                 \
			f = (type)next_sym(#name);                        \
			atomic_store_explicit(&fn, f, memory_order_release); \
		}                                                         \
		return f;                                                 \
	}

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*open2_fn)(const char *, int);
typedef int (*openat2_fn)(int, const char *, int);
typedef int (*close_fn)(int);
typedef int (*ioctl_fn)(int, unsigned long, ...);
typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);
typedef int (*madvise_fn)(void *, size_t, int);
typedef ssize_t (*pread_fn)(int, void *, size_t, off_t);

NEXT(open_fn, open)
NEXT(open_fn, open64)
NEXT(openat_fn, openat)
NEXT(openat_fn, openat64)
NEXT(open2_fn, __open_2)
NEXT(open2_fn, __open64_2)
NEXT(openat2_fn, __openat_2)
NEXT(openat2_fn, __openat64_2)
NEXT(close_fn, close)
NEXT(ioctl_fn, ioctl)
NEXT(mmap_fn, mmap)
NEXT(mmap_fn, mmap64)
NEXT(madvise_fn, madvise)
NEXT(pread_fn, pread)
NEXT(pread_fn, pread64)

int shim_real_ioctl(int fd, unsigned long req, void *arg)
{
	ioctl_fn f = next_ioctl();
	if (!f) {
		errno = ENOSYS;
		return -1;
	}
	return f(fd, req, arg);
}

int shim_real_madvise(void *addr, size_t len, int advice)
{
	madvise_fn f = next_madvise();
	if (!f) {
		errno = ENOSYS;
		return -1;
	}
	return f(addr, len, advice);
}

void *shim_real_mmap(void *addr, size_t len, int prot, int flags, int fd,
		     off_t off)
{
	mmap_fn f = next_mmap();
	if (!f) {
		errno = ENOSYS;
		return MAP_FAILED;
	}
	return f(addr, len, prot, flags, fd, off);
}

int shim_real_close(int fd)
{
	close_fn f = next_close();
	if (!f) {
		errno = ENOSYS;
		return -1;
	}
	return f(fd);
}

/* ------------------------------------------------------------------------
 * The process: its context, devices and open files
 */

static pthread_mutex_t proc_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t proc_pid;
static struct hetmm_ctx *proc_ctx;
static struct hetmm_emu *proc_emu[SHIM_DMIRROR_UNITS];
static struct shim_file *proc_files;      /* this process's and inherited */
static atomic_int proc_nfiles;            /* list length, read unlocked */
static atomic_ulong memfd_dev;            /* st_dev of every memfd */

/* After fork, in the child: what the parent built belongs to the parent.
 * Its context is left alone (its handler thread is not here to stop, and
 * its locks may have been held at the fork); the files stay listed, under
 * the parent's pid, so that they are still recognised. */
static void forget_parent(void)
{
	proc_pid = getpid();
	proc_ctx = NULL;
	memset(proc_emu, 0, sizeof(proc_emu));
}

static void atfork_prepare(void)
{
	pthread_mutex_lock(&proc_lock);
	if (proc_pid != getpid() || !proc_ctx)
		return;
	for (struct shim_file *f = proc_files; f; f = f->next)
		if (f->pid == proc_pid && f->unit < SHIM_DMIRROR_UNITS)
			dmirror_fork(f, proc_ctx);
}

static void atfork_parent(void)
{
	pthread_mutex_unlock(&proc_lock);
}

static void atfork_child(void)
{
	pthread_mutex_init(&proc_lock, NULL);
	shim_alloc_atfork_child();
	forget_parent();
}

__attribute__((constructor)) static void shim_init(void)
{
	/* Everything looked up now, so that no call later needs dlsym (which
	 * allocates from the program's heap). */
	next_open();
	next_open64();
	next_openat();
	next_openat64();
	next___open_2();
	next___open64_2();
	next___openat_2();
	next___openat64_2();
	next_close();
	next_ioctl();
	next_mmap();
	next_mmap64();
	next_madvise();
	shim_alloc_init();
	proc_pid = getpid();
	pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* Under proc_lock: a process made by clone(2) without fork's handlers
 * is noticed here. */
static void proc_check(void)
{
	if (proc_pid != getpid())
		forget_parent();
}

/*
 * At exit the process's context goes, as the kernel's mm goes with the
 * process, descriptors still open or not: its device pages come home for
 * the exit handlers that run after this one, its handler thread stops,
 * and nothing stays registered with a userfaultfd nobody reads.  A later
 * exit handler that stops every thread and reads the process's memory,
 * LeakSanitizer's leak check, waited for ever on the first missing page
 * of memory the context had registered (about 1 run in 3 of test_shim
 * under ASan: the shim's own .bss, merged with a mapping of the test's
 * and registered whole with it).  The files' mirrors go with the
 * context: an ioctl after this fails with EINVAL, as on a kernel whose
 * mm has gone.  Calls still running on other threads are not waited for.
 */
static void proc_exit(void)
{
	pthread_mutex_lock(&proc_lock);
	proc_check();
	struct hetmm_ctx *ctx = proc_ctx;
	for (struct shim_file *f = proc_files; ctx && f; f = f->next)
		if (f->pid == proc_pid)
			f->mirror = NULL;
	proc_ctx = NULL;
	memset(proc_emu, 0, sizeof(proc_emu));
	pthread_mutex_unlock(&proc_lock);
	if (ctx)
		hetmm_ctx_destroy(ctx);
}

/*
 * The process's context, made on first use, and made without proc_lock
 * held: hetmm_ctx_create takes hetmm's list of contexts, which hetmm's
 * own fork handler holds when ours takes proc_lock.  The first one made
 * in the program's image hooks the exit (a fork child inherits the hook).
 */
static int proc_ctx_get(struct hetmm_ctx **ctxp)
{
	pthread_mutex_lock(&proc_lock);
	proc_check();
	struct hetmm_ctx *ctx = proc_ctx;
	pthread_mutex_unlock(&proc_lock);
	if (!ctx) {
		struct hetmm_ctx *made = NULL;
		int rc = hetmm_ctx_create(&made, NULL);
		if (rc)
			return rc;
		pthread_mutex_lock(&proc_lock);
		proc_check();
		static bool exit_hooked;
		if (!proc_ctx) {
			proc_ctx = made;
			made = NULL;
			if (!exit_hooked)
				exit_hooked = atexit(proc_exit) == 0;
		}
		ctx = proc_ctx;
		pthread_mutex_unlock(&proc_lock);
		if (made)
			hetmm_ctx_destroy(made);   /* another thread won */
	}
	*ctxp = ctx;
	return 0;
}

struct hetmm_ctx *shim_ctx(void)
{
	struct hetmm_ctx *ctx = NULL;
	proc_ctx_get(&ctx);
	return ctx;
}

struct hetmm_ctx *shim_ctx_peek(void)
{
	pthread_mutex_lock(&proc_lock);
	proc_check();
	struct hetmm_ctx *ctx = proc_ctx;
	pthread_mutex_unlock(&proc_lock);
	return ctx;
}

/*
 * How much memory each device has.
 *
 * The kernel's test driver (lib/test_hmm.c) hot-adds device memory in
 * chunks of 256 MiB (DEVMEM_CHUNK_SIZE): one when the device is made, and
 * for a device-private unit another whenever an allocation finds the free
 * list empty.  Nothing caps the number of chunks (DEVMEM_CHUNKS_RESERVE,
 * 16, is only the step by which the driver's array of chunk pointers grows,
 * 4 GiB at a time); what bounds the device is memory, since every page
 * migrated to it takes a system page (alloc_page) to hold its bytes.  A
 * device-coherent unit's memory is a fixed range of special-purpose memory
 * (the module's spm_addr_devN) and its chunk always covers the same first
 * 256 MiB of it: a second chunk would overlap the first, memremap_pages()
 * refuses it, and the device stays at one chunk.  A migration larger than
 * what the device can take moves what fits and then fails the read-back
 * with -ENOENT.
 *
 * The shim gives each unit one emulated device, sized once to what the
 * kernel's device can grow to: a coherent unit one chunk; a private unit
 * the machine's memory, rounded up to whole chunks.  A device can't grow
 * in place here: its mirrors see only its own pagemap as local (pages of
 * another, even one added later for the same unit, are remote to them:
 * snapshot reports them absent and a device read brings them back to
 * system memory), so chunks as separate devices would not be one device to
 * the program.  Reserving the whole size up front costs little, since
 * almost nothing is committed until used:
 *
 *   device memory   address space only (MAP_NORESERVE, or a sparse memfd
 *                   for coherent units): a frame holds memory while a page
 *                   is in it, memory the page's process no longer holds;
 *   page metadata   hetmm_page_metadata_size() a frame (16 bytes), zeroed
 *                   address space (calloc) committed as frames are used;
 *   free-frame list 4 bytes a frame, written when the device is made:
 *                   the one cost of capacity, 1/1024 of it (24 MiB on a
 *                   machine with 24 GiB), paid at the first open of the
 *                   unit in a process (alloc.c makes that quick).
 *
 * HETMM_DMIRROR_PAGES=n makes every unit exactly n pages instead.  Where
 * the default reservation is refused (strict overcommit, an address-space
 * limit) the device is made smaller, halving down to one chunk.
 */
#define SHIM_CHUNK_PAGES ((256ULL << 20) / HETMM_PAGE_SIZE)
#define SHIM_MAX_DEVICE_PAGES (1ULL << 32)   /* hetmm_emu_create's limit */

/* The unit's size; *fixed when the environment gave it. */
static uint64_t device_pages(int unit, bool *fixed)
{
	const char *s = getenv("HETMM_DMIRROR_PAGES");
	*fixed = false;
	if (s && *s) {
		char *end;
		unsigned long long v = strtoull(s, &end, 0);
		*fixed = !*end && v;
		if (*fixed)
			return v;
	}
	if (unit >= 2)
		return SHIM_CHUNK_PAGES;
	long ram = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	if (ram <= 0 || psz <= 0)
		return SHIM_CHUNK_PAGES;
	uint64_t pages = (uint64_t)ram * ((uint64_t)psz / HETMM_PAGE_SIZE);
	pages = (pages + SHIM_CHUNK_PAGES - 1) / SHIM_CHUNK_PAGES *
		SHIM_CHUNK_PAGES;
	return MIN(MAX(pages, SHIM_CHUNK_PAGES), SHIM_MAX_DEVICE_PAGES);
}

/*
 * The emulated device behind /dev/hmm_dmirror<unit>, made on first use.
 * Units 0 and 1 are device-private, 2 and 3 device-coherent, as the
 * kernel's test driver numbers them.
 */
int shim_emu(int unit, struct hetmm_emu **emup)
{
	if (unit < 0 || unit >= SHIM_DMIRROR_UNITS)
		return -ENODEV;
	struct hetmm_ctx *ctx = NULL;
	int rc = proc_ctx_get(&ctx);
	if (rc)
		return rc;
	pthread_mutex_lock(&proc_lock);
	struct hetmm_emu *emu = proc_emu[unit];
	pthread_mutex_unlock(&proc_lock);
	if (emu) {
		*emup = emu;
		return 0;
	}
	/* Made without proc_lock: the device maps its memory with mmap,
	 * which comes through this shim's mmap and takes the lock, and
	 * hetmm's fork handler holds hetmm's locks when ours takes it. */
	enum hetmm_memory_type type = unit < 2 ? HETMM_MEMORY_DEVICE_PRIVATE :
						 HETMM_MEMORY_DEVICE_COHERENT;
	bool fixed;
	uint64_t pages = device_pages(unit, &fixed);
	rc = hetmm_emu_create(ctx, type, pages, &emu);
	while (rc == -ENOMEM && !fixed && pages > SHIM_CHUNK_PAGES) {
		pages = MAX(pages / 2, SHIM_CHUNK_PAGES);
		rc = hetmm_emu_create(ctx, type, pages, &emu);
	}
	if (rc)
		return rc;
	pthread_mutex_lock(&proc_lock);
	struct hetmm_emu *raced = proc_emu[unit];
	if (!raced)
		proc_emu[unit] = emu;
	pthread_mutex_unlock(&proc_lock);
	if (raced) {
		hetmm_emu_destroy(emu);
		emu = raced;
	}
	*emup = emu;
	return 0;
}

/* ------------------------------------------------------------------------
 * Files
 */

static void file_free(struct shim_file *f)
{
	/* The last reference of a description opened here: the kernel's
	 * release.  One inherited from the parent only goes away. */
	if (f->pid == getpid() && f->unit < SHIM_DMIRROR_UNITS)
		dmirror_release(f);
	pthread_mutex_destroy(&f->lock);
	free(f->excl);
	free(f);
}

static void file_put(struct shim_file *f)
{
	if (atomic_fetch_sub(&f->refs, 1) == 1)
		file_free(f);
}

/* The file a descriptor refers to, with a reference; NULL for every
 * descriptor the shim doesn't serve. */
static struct shim_file *file_get(int fd)
{
	if (fd < 0 || !atomic_load_explicit(&proc_nfiles, memory_order_acquire))
		return NULL;
	struct stat st;
	if (fstat(fd, &st) ||
	    (unsigned long)st.st_dev != atomic_load(&memfd_dev))
		return NULL;
	struct shim_file *found = NULL;
	pthread_mutex_lock(&proc_lock);
	for (struct shim_file *f = proc_files; f; f = f->next) {
		if (f->ino == st.st_ino && f->dev == st.st_dev) {
			atomic_fetch_add(&f->refs, 1);
			found = f;
			break;
		}
	}
	pthread_mutex_unlock(&proc_lock);
	return found;
}

/*
 * Does any descriptor of this process still refer to the description?
 * Read from /proc/self/fd with getdents64 into the stack: nothing here may
 * allocate from the program's heap, which the program may have overrun.
 */
static bool still_open(const struct shim_file *f)
{
	open_fn o = next_open();
	int dir = o ? o("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
		    : -1;
	if (dir < 0)
		return false;
	bool open = false;
	char buf[4096];   /* pagecheck: bytes of a read */
	long n;
	while (!open &&
	       (n = syscall(SYS_getdents64, dir, buf, sizeof(buf))) > 0) {
		for (long off = 0; off < n && !open;) {
			struct linux_dirent64 {
				uint64_t d_ino;
				int64_t d_off;
				unsigned short d_reclen;
				unsigned char d_type;
				char d_name[];
			} *d = (void *)(buf + off);
			char *end;
			long fd = strtol(d->d_name, &end, 10);
			struct stat st;
			off += d->d_reclen;
			if (*end || end == d->d_name || fd == dir)
				continue;
			if (!fstat((int)fd, &st) && st.st_ino == f->ino &&
			    st.st_dev == f->dev)
				open = true;
		}
	}
	shim_real_close(dir);
	return open;
}

static void file_unlist(struct shim_file *f)
{
	bool found = false;
	pthread_mutex_lock(&proc_lock);
	for (struct shim_file **pp = &proc_files; *pp; pp = &(*pp)->next) {
		if (*pp == f) {
			*pp = f->next;
			found = true;
			break;
		}
	}
	if (found)
		atomic_fetch_sub(&proc_nfiles, 1);
	pthread_mutex_unlock(&proc_lock);
	if (found)
		file_put(f);   /* the list's reference */
}

static const char *const dmirror_paths[SHIM_DMIRROR_UNITS] = {
	"/dev/hmm_dmirror0", "/dev/hmm_dmirror1",
	"/dev/hmm_dmirror2", "/dev/hmm_dmirror3",
};
static const char gup_test_path[] = "/sys/kernel/debug/gup_test";

/* Which file a path names: a unit, or -1 for any other path. */
static int path_unit(const char *path)
{
	if (!path)
		return -1;
	if (!strncmp(path, "/dev/hmm_dmirror", 16)) {
		for (int i = 0; i < SHIM_DMIRROR_UNITS; i++)
			if (!strcmp(path, dmirror_paths[i]))
				return i;
		return -1;
	}
	if (!strcmp(path, gup_test_path))
		return SHIM_UNIT_GUP;
	return -1;
}

static int shim_open(int unit, int flags)
{
	if ((flags & O_DIRECTORY) || (flags & (O_CREAT | O_EXCL)) ==
	    (O_CREAT | O_EXCL)) {
		errno = (flags & O_DIRECTORY) ? ENOTDIR : EEXIST;
		return -1;
	}
	struct shim_file *f = calloc(1, sizeof(*f));
	if (!f) {
		errno = ENOMEM;
		return -1;
	}
	char name[32];
	snprintf(name, sizeof(name), "%s",
		 unit == SHIM_UNIT_GUP ? "gup_test"
				       : dmirror_paths[unit] + 5);
	int fd = memfd_create(name, (flags & O_CLOEXEC) ? MFD_CLOEXEC : 0);
	if (fd < 0) {
		free(f);
		return -1;
	}
	struct stat st;
	if (fstat(fd, &st)) {
		int e = errno;
		shim_real_close(fd);
		free(f);
		errno = e;
		return -1;
	}
	f->dev = st.st_dev;
	f->ino = st.st_ino;
	f->pid = getpid();
	f->unit = unit;
	f->accmode = flags & O_ACCMODE;
	atomic_init(&f->refs, 1);
	atomic_init(&f->flags, 0);
	pthread_mutex_init(&f->lock, NULL);
	atomic_store(&memfd_dev, (unsigned long)st.st_dev);

	int rc = unit == SHIM_UNIT_GUP ? 0 : dmirror_open(f);
	if (rc) {
		shim_real_close(fd);
		pthread_mutex_destroy(&f->lock);
		free(f);
		errno = -rc;
		return -1;
	}
	pthread_mutex_lock(&proc_lock);
	f->next = proc_files;
	proc_files = f;
	atomic_fetch_add_explicit(&proc_nfiles, 1, memory_order_release);
	pthread_mutex_unlock(&proc_lock);
	return fd;
}

/* ------------------------------------------------------------------------
 * The interposed calls
 */

static mode_t open_mode(int flags, va_list ap)
{
	if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE)
		return (mode_t)va_arg(ap, int);
	return 0;
}

static int fail_nosys(void)
{
	errno = ENOSYS;
	return -1;
}

/* The program's own pagemap is read as under the kernel's HMM
 * (pagemap.c); fd as opened, errno kept. */
static int pagemap_opened(int fd, const char *path, const void *caller)
{
	int e = errno;
	shim_pagemap_opened(fd, path, caller);
	errno = e;
	return fd;
}

SHIM_EXPORT int open(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = open_mode(flags, ap);
	va_end(ap);
	int unit = path_unit(path);
	if (unit >= 0)
		return shim_open(unit, flags);
	open_fn f = next_open();
	return pagemap_opened(f ? f(path, flags, mode) : fail_nosys(), path,
			      __builtin_return_address(0));
}

SHIM_EXPORT int open64(const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = open_mode(flags, ap);
	va_end(ap);
	int unit = path_unit(path);
	if (unit >= 0)
		return shim_open(unit, flags);
	open_fn f = next_open64();
	return pagemap_opened(f ? f(path, flags, mode) : fail_nosys(), path,
			      __builtin_return_address(0));
}

SHIM_EXPORT int openat(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = open_mode(flags, ap);
	va_end(ap);
	int unit = path_unit(path);
	if (unit >= 0)
		return shim_open(unit, flags);
	openat_fn f = next_openat();
	return pagemap_opened(f ? f(dirfd, path, flags, mode) : fail_nosys(),
			      path, __builtin_return_address(0));
}

SHIM_EXPORT int openat64(int dirfd, const char *path, int flags, ...)
{
	va_list ap;
	va_start(ap, flags);
	mode_t mode = open_mode(flags, ap);
	va_end(ap);
	int unit = path_unit(path);
	if (unit >= 0)
		return shim_open(unit, flags);
	openat_fn f = next_openat64();
	return pagemap_opened(f ? f(dirfd, path, flags, mode) : fail_nosys(),
			      path, __builtin_return_address(0));
}

/* The _FORTIFY_SOURCE entry points. */
SHIM_EXPORT int __open_2(const char *path, int flags);
SHIM_EXPORT int __open64_2(const char *path, int flags);
SHIM_EXPORT int __openat_2(int dirfd, const char *path, int flags);
SHIM_EXPORT int __openat64_2(int dirfd, const char *path, int flags);

int __open_2(const char *path, int flags)
{
	int unit = path_unit(path);
	if (unit >= 0)
		return shim_open(unit, flags);
	open2_fn f = next___open_2();
	return pagemap_opened(f ? f(path, flags) : fail_nosys(), path,
			      __builtin_return_address(0));
}

int __open64_2(const char *path, int flags)
{
	int unit = path_unit(path);
	if (unit >= 0)
		return shim_open(unit, flags);
	open2_fn f = next___open64_2();
	return pagemap_opened(f ? f(path, flags) : fail_nosys(), path,
			      __builtin_return_address(0));
}

int __openat_2(int dirfd, const char *path, int flags)
{
	int unit = path_unit(path);
	if (unit >= 0)
		return shim_open(unit, flags);
	openat2_fn f = next___openat_2();
	return pagemap_opened(f ? f(dirfd, path, flags) : fail_nosys(), path,
			      __builtin_return_address(0));
}

int __openat64_2(int dirfd, const char *path, int flags)
{
	int unit = path_unit(path);
	if (unit >= 0)
		return shim_open(unit, flags);
	openat2_fn f = next___openat64_2();
	return pagemap_opened(f ? f(dirfd, path, flags) : fail_nosys(), path,
			      __builtin_return_address(0));
}

SHIM_EXPORT int close(int fd)
{
	shim_pagemap_closed(fd);
	struct shim_file *f = file_get(fd);
	int rc = shim_real_close(fd);
	if (f) {
		int e = errno;
		if (!rc && !still_open(f))
			file_unlist(f);
		file_put(f);
		errno = e;
	}
	return rc;
}

/* pread of the program's pagemap: see pagemap.c. */
static ssize_t pagemap_read(ssize_t got, int fd, void *buf, off_t off)
{
	if (got > 0 && shim_pagemap_tracked(fd)) {
		int e = errno;
		shim_pagemap_fix(buf, (size_t)got, off);
		errno = e;
	}
	return got;
}

SHIM_EXPORT ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
	pread_fn f = next_pread();
	return pagemap_read(f ? f(fd, buf, n, off) : fail_nosys(), fd, buf,
			    off);
}

SHIM_EXPORT ssize_t pread64(int fd, void *buf, size_t n, off_t off)
{
	pread_fn f = next_pread64();
	return pagemap_read(f ? f(fd, buf, n, off) : fail_nosys(), fd, buf,
			    off);
}

/* Requests the VFS answers itself, before any driver sees them. */
static bool vfs_ioctl(unsigned int cmd)
{
	return cmd == FIOCLEX || cmd == FIONCLEX || cmd == FIONBIO ||
	       cmd == FIOASYNC;
}

SHIM_EXPORT int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	va_start(ap, req);
	void *arg = va_arg(ap, void *);
	va_end(ap);

	struct shim_file *f = file_get(fd);
	if (!f)
		return shim_real_ioctl(fd, req, arg);
	/* The kernel's ioctl takes the command as an unsigned int. */
	unsigned int cmd = (unsigned int)req;
	long rc;
	if (vfs_ioctl(cmd)) {
		int r = shim_real_ioctl(fd, req, arg);
		rc = r < 0 ? -errno : r;
	} else if (f->unit == SHIM_UNIT_GUP) {
		rc = gup_test_ioctl(cmd, arg);
	} else if (f->pid != getpid()) {
		rc = -EINVAL;  /* the parent's mirror, of the parent's mm */
	} else {
		rc = dmirror_ioctl(f, cmd, arg);
	}
	file_put(f);
	if (rc < 0) {
		errno = (int)-rc;
		return -1;
	}
	return (int)rc;
}

static void *shim_mmap(void *addr, size_t len, int prot, int flags, int fd,
		       off_t off, mmap_fn next)
{
	struct shim_file *f = NULL;
	if (fd >= 0 && !(flags & MAP_ANONYMOUS))
		f = file_get(fd);
	if (!f) {
		if (!next) {
			errno = ENOSYS;
			return MAP_FAILED;
		}
		return next(addr, len, prot, flags, fd, off);
	}
	void *p;
	if (f->unit == SHIM_UNIT_GUP) {
		errno = ENODEV;   /* gup_test has no mmap */
		p = MAP_FAILED;
	} else {
		p = dmirror_mmap(f, addr, len, prot, flags, off);
	}
	int e = errno;
	file_put(f);
	errno = e;
	return p;
}

SHIM_EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd,
		       off_t off)
{
	return shim_mmap(addr, len, prot, flags, fd, off, next_mmap());
}

SHIM_EXPORT void *mmap64(void *addr, size_t len, int prot, int flags,
			 int fd, off_t off)
{
	return shim_mmap(addr, len, prot, flags, fd, off, next_mmap64());
}

/* MADV_FREE, refused by the kernel where a private anonymous range holds
 * coherent pages (vmas.c); every other call as it is. */
SHIM_EXPORT int madvise(void *addr, size_t len, int advice)
{
	int rc = shim_real_madvise(addr, len, advice);
	if (rc && errno == EINVAL && advice == MADV_FREE) {
		int e = shim_madvise_free(addr, len);
		if (e == -EINVAL)
			errno = EINVAL;   /* the kernel's answer stands */
		else if (e)
			errno = -e;
		rc = e ? -1 : 0;
	}
	return rc;
}

/* ------------------------------------------------------------------------
 * The caller's memory
 */

int shim_copy_in(void *dst, uint64_t src, size_t len)
{
	if (!len)
		return 0;
	struct iovec local = { .iov_base = dst, .iov_len = len };
	struct iovec remote = { .iov_base = (void *)(uintptr_t)src,
				.iov_len = len };
	ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
	return n == (ssize_t)len ? 0 : -EFAULT;
}

int shim_copy_out(uint64_t dst, const void *src, size_t len)
{
	if (!len)
		return 0;
	struct iovec local = { .iov_base = (void *)src, .iov_len = len };
	struct iovec remote = { .iov_base = (void *)(uintptr_t)dst,
				.iov_len = len };
	ssize_t n = process_vm_writev(getpid(), &local, 1, &remote, 1, 0);
	return n == (ssize_t)len ? 0 : -EFAULT;
}

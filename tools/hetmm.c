/* SPDX-License-Identifier: MIT */
/*
 * hetmm.c - the hetmm command line: info | bench | demo | file-scan |
 * help | --version.
 */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hetmm.h"
#include "compat.h"
#include "bench.h"

/* tools/demo.c */
int hetmm_demo_main(int argc, char **argv);
/* bench/remote.c */
int hetmm_bench_remote_main(int argc, char **argv);
/* tools/filescan.c */
int hetmm_file_scan_main(int argc, char **argv);

static void usage(FILE *f)
{
	fprintf(f,
		"usage: hetmm <command> [options]\n"
		"       hetmm --version\n"
		"\n"
		"commands:\n"
		"  info                 what the running kernel offers hetmm\n"
		"  bench [options]      hetmm against memcpy and raw userfaultfd\n"
		"  bench-remote [opts]  the remote device against UCX itself\n"
		"  demo                 migrate 64 MiB to an emulated device and back\n"
		"  file-scan FILE --bound SIZE\n"
		"                       read a file larger than SIZE through "
		"memory\n"
		"                       at most SIZE large (hetmm_file_attach)\n"
		"  help [command]       this text, or a command's options\n");
}

static void usage_info(FILE *f)
{
	fprintf(f,
		"usage: hetmm info\n"
		"  the kernel release, how hetmm opens its userfaultfd and what "
		"that\n"
		"  route loses, the userfaultfd features and ioctls offered, "
		"and\n"
		"  UFFDIO_MOVE, PAGEMAP_SCAN, PROCMAP_QUERY, THP; then a "
		"context is\n"
		"  created and destroyed; exits 1 if none can be\n");
}

/* `hetmm help CMD`: the command's own help, on stdout. */
static int cmd_help(const char *cmd)
{
	char *help_argv[] = { (char *)cmd, (char *)"--help", NULL };

	if (!cmd) {
		usage(stdout);
		return 0;
	}
	if (!strcmp(cmd, "info")) {
		usage_info(stdout);
		return 0;
	}
	if (!strcmp(cmd, "bench"))
		return hetmm_bench_main(2, help_argv);
	if (!strcmp(cmd, "bench-remote"))
		return hetmm_bench_remote_main(2, help_argv);
	if (!strcmp(cmd, "demo"))
		return hetmm_demo_main(2, help_argv);
	if (!strcmp(cmd, "file-scan"))
		return hetmm_file_scan_main(2, help_argv);
	if (!strcmp(cmd, "help")) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "hetmm help: unknown command '%s'\n", cmd);
	usage(stderr);
	return 2;
}

static const char *route_name(enum hetmm_uffd_route r)
{
	switch (r) {
	case HETMM_UFFD_SYSCALL:
		return "userfaultfd(2) syscall";
	case HETMM_UFFD_DEVNODE:
		return "/dev/userfaultfd";
	case HETMM_UFFD_USER_MODE_ONLY:
		return "userfaultfd(2) with UFFD_USER_MODE_ONLY";
	}
	return "none";
}

static const char *route_loses(enum hetmm_uffd_route r)
{
	switch (r) {
	case HETMM_UFFD_SYSCALL:
	case HETMM_UFFD_DEVNODE:
		return "nothing: faults taken in kernel mode (syscalls such as "
		       "read(2)/write(2) into a device-resident buffer) migrate "
		       "the page back like CPU faults";
	case HETMM_UFFD_USER_MODE_ONLY:
		return "kernel-mode faults: a syscall that touches a "
		       "device-resident buffer (read(2) into it, write(2) from "
		       "it, futexes, ...) fails with EFAULT instead of migrating "
		       "the page back; migrate to system memory first";
	}
	return "everything: no userfaultfd route works, hetmm cannot run "
	       "(need root/CAP_SYS_PTRACE, vm.unprivileged_userfaultfd=1 or "
	       "access to /dev/userfaultfd)";
}

static const struct {
	uint64_t bit;
	const char *name;
	const char *what;
} features[] = {
	{ UFFD_FEATURE_PAGEFAULT_FLAG_WP, "PAGEFAULT_FLAG_WP", "write-protect faults" },
	{ UFFD_FEATURE_EVENT_FORK, "EVENT_FORK", "fork events" },
	{ UFFD_FEATURE_EVENT_REMAP, "EVENT_REMAP", "mremap events" },
	{ UFFD_FEATURE_EVENT_REMOVE, "EVENT_REMOVE", "madvise(DONTNEED/REMOVE) events" },
	{ UFFD_FEATURE_MISSING_HUGETLBFS, "MISSING_HUGETLBFS", "missing faults on hugetlbfs" },
	{ UFFD_FEATURE_MISSING_SHMEM, "MISSING_SHMEM", "missing faults on shmem" },
	{ UFFD_FEATURE_EVENT_UNMAP, "EVENT_UNMAP", "munmap events" },
	{ UFFD_FEATURE_SIGBUS, "SIGBUS", "SIGBUS instead of fault messages" },
	{ UFFD_FEATURE_THREAD_ID, "THREAD_ID", "faulting thread id" },
	{ UFFD_FEATURE_MINOR_HUGETLBFS, "MINOR_HUGETLBFS", "minor faults on hugetlbfs" },
	{ UFFD_FEATURE_MINOR_SHMEM, "MINOR_SHMEM", "minor faults on shmem" },
	{ UFFD_FEATURE_EXACT_ADDRESS, "EXACT_ADDRESS", "unmasked fault address" },
	{ UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "WP_HUGETLBFS_SHMEM", "write-protect on hugetlbfs/shmem" },
	{ UFFD_FEATURE_WP_UNPOPULATED, "WP_UNPOPULATED", "write-protect unpopulated anon ptes" },
	{ UFFD_FEATURE_POISON, "POISON", "UFFDIO_POISON" },
	{ UFFD_FEATURE_WP_ASYNC, "WP_ASYNC", "asynchronous write-protect (dirty tracking)" },
	{ UFFD_FEATURE_MOVE, "MOVE", "UFFDIO_MOVE" },
};

static const struct {
	int nr;
	const char *name;
} ioctls[] = {
	/* Range ioctls: what UFFDIO_REGISTER reports for a range. */
	{ _UFFDIO_WAKE, "WAKE" },
	{ _UFFDIO_COPY, "COPY" },
	{ _UFFDIO_ZEROPAGE, "ZEROPAGE" },
	{ _UFFDIO_MOVE, "MOVE" },
	{ _UFFDIO_WRITEPROTECT, "WRITEPROTECT" },
	{ _UFFDIO_CONTINUE, "CONTINUE" },
	{ _UFFDIO_POISON, "POISON" },
};

static void print_features(const char *indent, uint64_t f)
{
	uint64_t known = 0;

	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++) {
		known |= features[i].bit;
		printf("%s[%c] bit %2d  %-20s %s\n", indent,
		       (f & features[i].bit) ? 'x' : ' ',
		       __builtin_ctzll(features[i].bit), features[i].name,
		       features[i].what);
	}
	for (int b = 0; b < 64; b++)
		if ((f & ~known) & (1ull << b))
			printf("%s[x] bit %2d  (unknown to this build)\n", indent, b);
}

static void print_ioctls(const char *indent, uint64_t m)
{
	uint64_t known = 0;

	printf("%s", indent);
	for (size_t i = 0; i < sizeof(ioctls) / sizeof(ioctls[0]); i++) {
		uint64_t bit = 1ull << ioctls[i].nr;

		known |= bit;
		printf("%s%s ", (m & bit) ? "+" : "-", ioctls[i].name);
	}
	for (int b = 0; b < 64; b++)
		if ((m & ~known) & (1ull << b))
			printf("+bit%d ", b);
	printf("\n");
}

static const char *yesno(int v)
{
	return v ? "yes" : "no";
}

/*
 * `hetmm info` must answer, not hang: probing touches userfaultfd, whose
 * misuse blocks a thread for good (a munmap waiting for an event nobody
 * reads).  A watchdog reports which step stalled and exits.
 */
#define INFO_TIMEOUT_S 10

static const char *volatile info_step = "starting";

static void *info_watchdog(void *arg)
{
	struct timespec ts = { .tv_sec = INFO_TIMEOUT_S, .tv_nsec = 0 };

	(void)arg;
	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
	fflush(stdout);
	fprintf(stderr, "hetmm info: %s did not return within %d s; giving "
		"up\n", info_step, INFO_TIMEOUT_S);
	_exit(1);
	return NULL;
}

/* How the file device reaches storage here: a device of one page on a
 * file in $TMPDIR (or /tmp), removed after. */
static void print_file_device(struct hetmm_ctx *ctx)
{
	const char *tmp = getenv("TMPDIR");
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/hetmm-info-XXXXXX",
		 tmp && tmp[0] == '/' ? tmp : "/tmp");
	int fd = mkstemp(path);
	if (fd < 0) {
		printf("file device         no file to try: %s\n",
		       strerror(errno));
		return;
	}
	close(fd);
	struct hetmm_file_desc d = { .path = path, .nr_pages = 1 };
	struct hetmm_file *f;
	struct hetmm_file_info fi;
	int rc = hetmm_file_create(ctx, &d, &f);
	if (!rc) {
		rc = hetmm_file_get_info(f, &fi);
		hetmm_file_destroy(f);
	}
	unlink(path);
	if (rc) {
		printf("file device         failed on %s: %s\n", path,
		       hetmm_strerror(rc));
		return;
	}
	if (fi.io == HETMM_FILE_IO_URING)
		printf("file device io      io_uring%s\n", fi.fixed_buffers ?
		       ", reads into registered buffers" :
		       " (buffers not registered: RLIMIT_MEMLOCK?)");
	else if (fi.uring_errno)
		printf("file device io      pread/pwrite: io_uring refused "
		       "(%s)\n", strerror(-fi.uring_errno));
	else
		printf("file device io      pread/pwrite (HETMM_FILE_IO=pread)\n");
	printf("  O_DIRECT on %-6s %s\n", tmp && tmp[0] == '/' ? "TMPDIR" :
	       "/tmp", fi.direct ? "yes" : "no: the filesystem refuses it, "
	       "through the page cache");
}

/* Whether hetmm_remote_create() can work here: built with UCX's headers,
 * and libucp loadable (the library opens it at run time). */
static const char *remote_state(void)
{
#ifdef HETMM_HAVE_UCX
	void *h = dlopen("libucp.so.0", RTLD_LAZY | RTLD_LOCAL);
	if (!h)
		return "built; libucp.so.0 not found (apt-get install libucx0)";
	dlclose(h);
	return "yes (libucp.so.0 loads; servers: hetmm-memd)";
#else
	return "not built (UCX's headers missing: apt-get install libucx-dev)";
#endif
}

static int cmd_info(void)
{
	struct hetmm_kernel_info ki;
	struct hetmm_ctx *ctx = NULL;
	enum hetmm_uffd_route route = 0;
	uint64_t feats = 0;
	int rc, status = 0;

	{
		pthread_t wd;

		if (!pthread_create(&wd, NULL, info_watchdog, NULL))
			pthread_detach(wd);
	}
	memset(&ki, 0, sizeof(ki));
	info_step = "hetmm_kernel_probe()";
	rc = hetmm_kernel_probe(&ki);
	if (rc) {
		fprintf(stderr, "hetmm info: hetmm_kernel_probe: %s\n",
			strerror(-rc));
		return 1;
	}
	printf("kernel release      %s\n", ki.release);
	printf("userfaultfd route   %s", route_name(ki.route));
	if (ki.route)
		printf(" (%d)", (int)ki.route);
	printf("\n");
	if (ki.route_errno)
		printf("  better routes     failed: %s (errno %d)\n",
		       strerror(ki.route_errno), ki.route_errno);
	printf("  loses             %s\n", route_loses(ki.route));
	printf("uffd features       0x%016" PRIx64 "\n", ki.uffd_features);
	print_features("  ", ki.uffd_features);
	printf("uffd ioctls on anon 0x%016" PRIx64 " (+ offered, - not)\n",
	       ki.uffd_ioctls);
	print_ioctls("  ", ki.uffd_ioctls);
	printf("UFFDIO_MOVE         %s\n", yesno(ki.has_move));
	printf("anon write-protect  %s\n", yesno(ki.has_wp));
	printf("PAGEMAP_SCAN        %s\n", yesno(ki.has_pagemap_scan));
	printf("PROCMAP_QUERY       %s\n", yesno(ki.has_procmap_query));
	printf("transparent huge    %s\n", yesno(ki.has_thp));
	printf("zero/huge page state %s\n",
	       ki.has_page_state ? (ki.has_pagemap_scan ? "yes (PAGEMAP_SCAN)"
					: "yes (pagemap frames, kpageflags)")
			  : "no (needs PAGEMAP_SCAN, or root)");
	printf("process_vm_readv    %s\n", ki.has_process_read ?
	       "yes (a munmap under a copy to a device fails the copy)" :
	       "refused (seccomp?): a munmap under a copy to a device "
	       "kills the process");
	printf("metadata per page   %d bytes\n", hetmm_page_metadata_size());
	printf("remote device (UCX) %s\n", remote_state());
	if (!ki.route)
		status = 1;

	fflush(stdout);
	info_step = "hetmm_ctx_create()";
	rc = hetmm_ctx_create(&ctx, NULL);
	if (rc) {
		printf("context             hetmm_ctx_create failed: %s\n",
		       strerror(-rc));
		return 1;
	}
	rc = hetmm_ctx_uffd_info(ctx, &route, &feats);
	if (rc) {
		printf("context             hetmm_ctx_uffd_info failed: %s\n",
		       strerror(-rc));
		status = 1;
	} else {
		printf("context uffd route  %s (%d)\n", route_name(route),
		       (int)route);
		printf("context features    0x%016" PRIx64
		       " (enabled on the context's userfaultfd)\n", feats);
		print_features("  ", feats);
		printf("uffd-wp markers     %s\n",
		       (feats & UFFD_FEATURE_WP_UNPOPULATED) ?
		       "yes (on private device pages; mremap races told "
		       "apart by them)" :
		       "no (needs WP_UNPOPULATED, Linux 6.5)");
	}
	fflush(stdout);
	info_step = "the file device";
	print_file_device(ctx);
	fflush(stdout);
	info_step = "hetmm_ctx_destroy()";
	rc = hetmm_ctx_destroy(ctx);
	if (rc) {
		fprintf(stderr, "hetmm info: hetmm_ctx_destroy: %s\n",
			strerror(-rc));
		status = 1;
	}
	return status;
}

static int is_help(const char *a)
{
	return !strcmp(a, "--help") || !strcmp(a, "-h");
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : NULL;

	if (!cmd) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
		int v = hetmm_version();

		printf("hetmm %d.%d.%d (library %d.%d.%d)\n",
		       HETMM_VERSION_MAJOR, HETMM_VERSION_MINOR,
		       HETMM_VERSION_PATCH, v / 10000, v / 100 % 100,
		       v % 100);
		return 0;
	}
	if (!strcmp(cmd, "info")) {
		if (argc > 2) {
			if (is_help(argv[2]))
				return cmd_help("info");
			usage_info(stderr);
			return 2;
		}
		return cmd_info();
	}
	if (!strcmp(cmd, "bench"))
		return hetmm_bench_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "bench-remote"))
		return hetmm_bench_remote_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "demo"))
		return hetmm_demo_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "file-scan"))
		return hetmm_file_scan_main(argc - 1, argv + 1);
	if (!strcmp(cmd, "help") || is_help(cmd)) {
		if (argc > 3) {
			usage(stderr);
			return 2;
		}
		return cmd_help(argc > 2 ? argv[2] : NULL);
	}
	fprintf(stderr, "hetmm: unknown command '%s'\n", cmd);
	usage(stderr);
	return 2;
}

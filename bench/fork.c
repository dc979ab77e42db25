/* SPDX-License-Identifier: MIT */
/*
 * fork.c - fork() with pages on a device.
 *
 * hetmm's pthread_atfork handler brings every device page home before the
 * child exists, so that the kernel's copy-on-write applies to the bytes
 * as they are.  Timed: fork() + the child's _exit() + waitpid() in the
 * parent, with the buffer (populated, size bytes) on an emulated
 * DEVICE_PRIVATE device, vs the same with the buffer in system memory, in
 * the same run.  A fresh buffer each repetition: pages fork shared are not
 * moved by UFFDIO_MOVE again and would change the next migration.
 */
#include "sections.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

static int fork_once(char *buf, size_t size, double *ns)
{
	uint64_t t0 = now_ns();
	pid_t pid = fork();
	int st = 0;

	if (pid < 0)
		return -errno;
	if (pid == 0)
		_exit(buf[size - 1] == 0x4f ? 0 : 3);
	if (waitpid(pid, &st, 0) != pid)
		return -errno;
	*ns = (double)(now_ns() - t0);
	if (!WIFEXITED(st) || WEXITSTATUS(st)) {
		warn_("fork: the child saw the wrong data (status %d)", st);
		return -EIO;
	}
	return 0;
}

int bench_fork(struct hetmm_ctx *ctx, size_t size, int reps,
	       struct fork_result *r)
{
	double td[MAX_REPS], ts[MAX_REPS], fp = 0;
	struct hetmm_emu *emu = NULL;
	struct hetmm_pagemap *pg;
	int rc, n = 0;

	memset(r, 0, sizeof(*r));
	r->size = size;
	r->dev_ns = r->sys_ns = NAN;
	rc = hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_PRIVATE, size / PAGE,
			      &emu);
	if (rc) {
		r->err = rc;
		return rc;
	}
	rc = hetmm_emu_pagemap(emu, &pg);
	for (int i = -1; i < reps && !rc; i++) {
		char *a = map_anon(size, 0), *b = map_anon(size, 0);
		struct hetmm_stats s0, s1;
		double d = NAN, s = NAN;

		if (!a || !b) {
			rc = -ENOMEM;
		} else {
			populate(a, size, 0x4f);
			populate(b, size, 0x4f);
			rc = hetmm_migrate_to_device(pg, a, size, NULL);
		}
		if (!rc) {
			hetmm_ctx_get_stats(ctx, &s0);
			rc = fork_once(a, size, &d);
			hetmm_ctx_get_stats(ctx, &s1);
		}
		if (!rc)
			rc = fork_once(b, size, &s);
		if (!rc && (a[0] != 0x4f || a[size - 1] != 0x4f)) {
			warn_("fork: DATA MISMATCH in the parent");
			rc = -EIO;
		}
		if (a)
			munmap(a, size);
		if (b)
			munmap(b, size);
		if (!rc && i >= 0) {
			td[n] = d;
			ts[n] = s;
			fp += (double)(s1.fork_pages - s0.fork_pages);
			n++;
		}
	}
	if (!rc) {
		r->dev_ns = median(td, n);
		r->sys_ns = median(ts, n);
		r->fork_pages = n ? fp / n : NAN;
	}
	{
		int r2 = hetmm_emu_destroy(emu);

		if (!rc)
			rc = r2;
	}
	r->err = rc;
	return rc;
}

void fork_print_text(const struct fork_result *r, int n)
{
	char sb[32];

	printf("\nfork with device pages (fork + child _exit + waitpid; the "
	       "atfork handler brings device pages home first):\n");
	printf("  %6s %12s %12s %8s %12s %12s %12s\n", "size", "device ms",
	       "system ms", "ratio", "device ns/p", "system ns/p",
	       "pages home");
	for (int i = 0; i < n; i++) {
		const struct fork_result *f = &r[i];

		if (f->err) {
			printf("  %6s  failed: %s\n",
			       fmt_size(f->size, sb, sizeof(sb)),
			       strerror(-f->err));
			continue;
		}
		printf("  %6s %12.3f %12.3f %8.3f %12.1f %12.1f %12.0f\n",
		       fmt_size(f->size, sb, sizeof(sb)), f->dev_ns / 1e6,
		       f->sys_ns / 1e6, f->dev_ns / f->sys_ns,
		       ns_per_page(f->size, f->dev_ns),
		       ns_per_page(f->size, f->sys_ns), f->fork_pages);
	}
	printf("  (ratio = time with the pages on the device / time with "
	       "them in system RAM, lower is better)\n");
}

void fork_print_json(FILE *f, const struct fork_result *r, int n)
{
	fputs(",\n  \"fork\": [", f);
	for (int i = 0; i < n; i++) {
		const struct fork_result *k = &r[i];

		fprintf(f, "%s\n    {\"size\": %zu, \"device_ns\": ",
			i ? "," : "", k->size);
		json_num(f, k->dev_ns, 0);
		fputs(", \"system_ns\": ", f);
		json_num(f, k->sys_ns, 0);
		fputs(", \"device_vs_system\": ", f);
		json_num(f, k->dev_ns / k->sys_ns, 4);
		fputs(", \"device_ns_per_page\": ", f);
		json_num(f, ns_per_page(k->size, k->dev_ns), 1);
		fputs(", \"system_ns_per_page\": ", f);
		json_num(f, ns_per_page(k->size, k->sys_ns), 1);
		fputs(", \"pages_brought_home\": ", f);
		json_num(f, k->fork_pages, 0);
		fprintf(f, ", \"error\": %d}", k->err);
	}
	fputs("\n  ]", f);
}

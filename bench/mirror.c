/* SPDX-License-Identifier: MIT */
/*
 * mirror.c - device mirror read/write throughput.
 *
 * An emulated device reads and writes process memory through its mirror
 * (hetmm_mirror_read/write), as a device DMAs through its own page table.
 * Baselines of the same bytes in the same run: memcpy() between populated
 * buffers, and process_vm_readv/writev of the process's own memory (what
 * the device's copy engine uses for system pages).
 *
 *   read cold   a new mirror reads the buffer: range faults included
 *   read        the mirror reads it again (entries present)
 *   write       the mirror writes it (entries present, writable)
 *   read dev    the buffer is on this device; the mirror reads it where
 *               it is
 */
#include "sections.h"

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

static int vm_rw(char *local, char *remote, size_t len, int write)
{
	struct iovec l = { .iov_base = local, .iov_len = len };
	struct iovec r = { .iov_base = remote, .iov_len = len };
	ssize_t got = write ? process_vm_writev(getpid(), &l, 1, &r, 1, 0)
			    : process_vm_readv(getpid(), &l, 1, &r, 1, 0);

	if (got < 0)
		return -errno;
	return (size_t)got == len ? 0 : -EIO;
}

static int baselines(char *buf, char *dst, size_t size, int reps,
		     struct mirror_result *r)
{
	double tm[MAX_REPS], tr[MAX_REPS], tw[MAX_REPS];
	int rc = 0;

	for (int i = -1; i < reps && !rc; i++) {
		uint64_t t0 = now_ns(), t1, t2, t3;

		memcpy(dst, buf, size);
		t1 = now_ns();
		rc = vm_rw(dst, buf, size, 0);
		t2 = now_ns();
		if (!rc)
			rc = vm_rw(dst, buf, size, 1);
		t3 = now_ns();
		if (i >= 0) {
			tm[i] = (double)(t1 - t0);
			tr[i] = (double)(t2 - t1);
			tw[i] = (double)(t3 - t2);
		}
	}
	if (rc)
		return rc;
	r->memcpy_ns = median(tm, reps);
	r->vm_readv_ns = median(tr, reps);
	r->vm_writev_ns = median(tw, reps);
	return 0;
}

static int check(const char *dst, size_t size, unsigned char want)
{
	for (size_t o = 0; o < size; o += PAGE * 61 + 97)
		if ((unsigned char)dst[o] != want) {
			warn_("DATA MISMATCH in mirror read at %zu: 0x%02x, "
			      "want 0x%02x", o, (unsigned char)dst[o], want);
			return -EIO;
		}
	return 0;
}

int bench_mirror(struct hetmm_ctx *ctx, size_t size, int reps,
		 struct mirror_result *r)
{
	uint64_t npages = size / PAGE;
	double tc[MAX_REPS], tr[MAX_REPS], tw[MAX_REPS], td[MAX_REPS];
	double cf = 0;
	struct hetmm_emu *emu = NULL;
	struct hetmm_pagemap *pg;
	char *buf = map_anon(size, 0), *dst = map_anon(size, 0);
	int rc = -ENOMEM, n = 0;

	memset(r, 0, sizeof(*r));
	r->size = size;
	r->read_cold_ns = r->read_ns = r->write_ns = r->read_dev_ns = NAN;
	r->memcpy_ns = r->vm_readv_ns = r->vm_writev_ns = NAN;
	if (!buf || !dst)
		goto out;
	populate(buf, size, 0x5c);
	populate(dst, size, 0);
	rc = baselines(buf, dst, size, reps, r);
	if (rc)
		goto out;
	rc = hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_PRIVATE, npages, &emu);
	if (rc) {
		emu = NULL;
		goto out;
	}
	rc = hetmm_emu_pagemap(emu, &pg);
	for (int i = -1; i < reps && !rc; i++) {
		struct hetmm_mirror *m = NULL;
		uint64_t f = 0, t0, t1, t2, t3, t4;
		struct hetmm_migrate_report rep;

		populate(buf, size, 0x5c);
		rc = hetmm_mirror_create(emu, &m);
		if (rc)
			break;
		t0 = now_ns();
		rc = hetmm_mirror_read(m, buf, dst, npages, &f);
		t1 = now_ns();
		if (!rc)
			rc = check(dst, size, 0x5c);
		if (!rc)
			rc = hetmm_mirror_read(m, buf, dst, npages, NULL);
		t2 = now_ns();
		if (!rc) {
			memset(dst, 0x6d, size);
			t2 = now_ns();
			rc = hetmm_mirror_write(m, buf, dst, npages, NULL);
		}
		t3 = now_ns();
		if (!rc && (buf[0] != 0x6d || buf[size - 1] != 0x6d)) {
			warn_("DATA MISMATCH after mirror write");
			rc = -EIO;
		}
		/* The buffer on this device, read where it is. */
		if (!rc) {
			memset(&rep, 0, sizeof(rep));
			rc = hetmm_migrate_to_device(pg, buf, size, &rep);
			if (rc > 0)
				rc = 0;
		}
		if (!rc)
			rc = hetmm_mirror_read(m, buf, dst, npages, NULL);
		t4 = now_ns();
		if (!rc)
			rc = hetmm_mirror_read(m, buf, dst, npages, NULL);
		t4 = now_ns() - t4;
		if (!rc)
			rc = check(dst, size, 0x6d);
		(void)hetmm_migrate_to_system(ctx, buf, size, NULL);
		{
			int r2 = hetmm_mirror_destroy(m);

			if (!rc)
				rc = r2;
		}
		if (!rc && i >= 0) {
			tc[n] = (double)(t1 - t0);
			tr[n] = (double)(t2 - t1);
			tw[n] = (double)(t3 - t2);
			td[n] = (double)t4;
			cf += (double)f;
			n++;
		}
	}
	if (!rc) {
		r->read_cold_ns = median(tc, n);
		r->read_ns = median(tr, n);
		r->write_ns = median(tw, n);
		r->read_dev_ns = median(td, n);
		r->cold_faults = n ? (uint64_t)(cf / n + 0.5) : 0;
	}
out:
	if (emu) {
		int r2 = hetmm_emu_destroy(emu);

		if (!rc)
			rc = r2;
	}
	if (buf)
		munmap(buf, size);
	if (dst)
		munmap(dst, size);
	r->err = rc;
	return rc;
}

void mirror_print_text(const struct mirror_result *r, int n)
{
	char sb[32];

	printf("\ndevice mirror (hetmm_mirror_read/write of an emulated "
	       "device), GB/s; ratios to memcpy and to process_vm_readv/"
	       "writev of the same bytes:\n");
	printf("  %6s %10s %10s %10s %10s %10s %10s %10s  %s\n", "size",
	       "read cold", "read", "write", "read dev", "memcpy", "vm_readv",
	       "vm_writev", "read/memcpy read/readv write/writev dev/memcpy");
	for (int i = 0; i < n; i++) {
		const struct mirror_result *m = &r[i];
		size_t s = m->size;

		if (m->err) {
			printf("  %6s  failed: %s\n", fmt_size(s, sb, sizeof(sb)),
			       strerror(-m->err));
			continue;
		}
		printf("  %6s %10.3f %10.3f %10.3f %10.3f %10.3f %10.3f %10.3f"
		       "  %11.3f %10.3f %11.3f %10.3f\n",
		       fmt_size(s, sb, sizeof(sb)), gbps(s, m->read_cold_ns),
		       gbps(s, m->read_ns), gbps(s, m->write_ns),
		       gbps(s, m->read_dev_ns), gbps(s, m->memcpy_ns),
		       gbps(s, m->vm_readv_ns), gbps(s, m->vm_writev_ns),
		       m->memcpy_ns / m->read_ns, m->vm_readv_ns / m->read_ns,
		       m->vm_writev_ns / m->write_ns,
		       m->memcpy_ns / m->read_dev_ns);
		printf("  %6s  ns/page: read cold %.0f (range faults: %llu), "
		       "read %.0f, write %.0f, read dev %.0f; memcpy %.0f, "
		       "vm_readv %.0f\n", "",
		       ns_per_page(s, m->read_cold_ns),
		       (unsigned long long)m->cold_faults,
		       ns_per_page(s, m->read_ns), ns_per_page(s, m->write_ns),
		       ns_per_page(s, m->read_dev_ns),
		       ns_per_page(s, m->memcpy_ns),
		       ns_per_page(s, m->vm_readv_ns));
	}
}

void mirror_print_json(FILE *f, const struct mirror_result *r, int n)
{
	fputs(",\n  \"mirror\": [", f);
	for (int i = 0; i < n; i++) {
		const struct mirror_result *m = &r[i];
		size_t s = m->size;

		fprintf(f, "%s\n    {\"size\": %zu, \"read_cold_gbps\": ",
			i ? "," : "", s);
		json_num(f, gbps(s, m->read_cold_ns), 4);
		fputs(", \"read_gbps\": ", f);
		json_num(f, gbps(s, m->read_ns), 4);
		fputs(", \"write_gbps\": ", f);
		json_num(f, gbps(s, m->write_ns), 4);
		fputs(", \"read_device_resident_gbps\": ", f);
		json_num(f, gbps(s, m->read_dev_ns), 4);
		fputs(", \"memcpy_gbps\": ", f);
		json_num(f, gbps(s, m->memcpy_ns), 4);
		fputs(", \"process_vm_readv_gbps\": ", f);
		json_num(f, gbps(s, m->vm_readv_ns), 4);
		fputs(", \"process_vm_writev_gbps\": ", f);
		json_num(f, gbps(s, m->vm_writev_ns), 4);
		fputs(", \"read_vs_memcpy\": ", f);
		json_num(f, m->memcpy_ns / m->read_ns, 4);
		fputs(", \"read_vs_process_vm_readv\": ", f);
		json_num(f, m->vm_readv_ns / m->read_ns, 4);
		fputs(", \"write_vs_memcpy\": ", f);
		json_num(f, m->memcpy_ns / m->write_ns, 4);
		fputs(", \"write_vs_process_vm_writev\": ", f);
		json_num(f, m->vm_writev_ns / m->write_ns, 4);
		fputs(", \"read_device_resident_vs_memcpy\": ", f);
		json_num(f, m->memcpy_ns / m->read_dev_ns, 4);
		fputs(", \"read_ns_per_page\": ", f);
		json_num(f, ns_per_page(s, m->read_ns), 1);
		fprintf(f, ", \"cold_range_faults\": %llu, \"error\": %d}",
			(unsigned long long)m->cold_faults, m->err);
	}
	fputs("\n  ]", f);
}

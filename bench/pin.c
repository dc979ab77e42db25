/* SPDX-License-Identifier: MIT */
/*
 * pin.c - the pin fast path.
 *
 * hetmm_pin_user_pages_fast(), hetmm_pin_user_pages() and
 * hetmm_get_user_pages_fast() of PIN_PAGES resident pages, PIN_BATCH pages
 * per call (one 2 MiB DMA batch), and the unpin that releases the fast
 * pins: each in ns per page, the median of reps repetitions after one
 * warm-up.  Against a target ("targets", output.c), not a baseline.
 */
#include "sections.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#define PIN_PAGES 4096        /* pagecheck: pages (16 MiB at 4 KiB) */
#define PIN_BATCH 512         /* pages per call: one 2 MiB DMA batch */

typedef long (*gup_fn)(struct hetmm_ctx *, void *, size_t, unsigned int,
		       void **);

/* ns per page to hold (fn) and release PIN_PAGES resident pages. */
static int time_holds(struct hetmm_ctx *ctx, char *buf, void **pages,
		      gup_fn fn, int pin, int reps, double *hold_ns,
		      double *release_ns)
{
	double th[64], tr[64];

	for (int r = 0; r <= reps; r++) {   /* r == 0: warm-up */
		uint64_t t0 = now_ns();
		for (size_t a = 0; a < PIN_PAGES; a += PIN_BATCH) {
			long got = fn(ctx, buf + a * PAGE, PIN_BATCH, 0,
				      pages + a);
			if (got != PIN_BATCH)
				return got < 0 ? (int)got : -EIO;
		}
		uint64_t t1 = now_ns();
		int rc = pin ? hetmm_unpin_user_pages(ctx, pages, PIN_PAGES)
			     : hetmm_put_user_pages(ctx, pages, PIN_PAGES);
		if (rc)
			return rc;
		if (r) {
			th[r - 1] = (double)(t1 - t0) / PIN_PAGES;
			tr[r - 1] = (double)(now_ns() - t1) / PIN_PAGES;
		}
	}
	*hold_ns = median(th, reps);
	if (release_ns)
		*release_ns = median(tr, reps);
	return 0;
}

int bench_pin(struct hetmm_ctx *ctx, int reps, struct pin_result *r)
{
	char *buf = map_anon(PIN_PAGES * PAGE, -1);
	void **pages = calloc(PIN_PAGES, sizeof(void *));
	int rc = -ENOMEM;

	if (buf && pages) {
		populate(buf, PIN_PAGES * PAGE, 0x3c);
		rc = time_holds(ctx, buf, pages, hetmm_pin_user_pages_fast, 1,
				reps, &r->pin_fast_ns, &r->unpin_ns);
		if (!rc)
			rc = time_holds(ctx, buf, pages, hetmm_pin_user_pages,
					1, reps, &r->pin_slow_ns, NULL);
		if (!rc)
			rc = time_holds(ctx, buf, pages,
					hetmm_get_user_pages_fast, 0, reps,
					&r->get_fast_ns, NULL);
	}
	free(pages);
	if (buf)
		munmap(buf, PIN_PAGES * PAGE);
	return rc;
}

void pin_print_text(const struct pin_result *r)
{
	printf("\npin fast path (%d resident pages, %d per call): "
	       "pin_user_pages_fast %.1f ns/page, pin_user_pages %.1f ns/page, "
	       "get_user_pages_fast %.1f ns/page, unpin %.1f ns/page\n", (int)PIN_PAGES, (int)PIN_BATCH,
	       r->pin_fast_ns, r->pin_slow_ns, r->get_fast_ns, r->unpin_ns);
}

void pin_print_json(FILE *f, const struct pin_result *r)
{
	fputs(",\n  \"pin\": {\"pin_fast_ns_per_page\": ", f);
	json_num(f, r->pin_fast_ns, 2);
	fputs(", \"pin_slow_ns_per_page\": ", f);
	json_num(f, r->pin_slow_ns, 2);
	fputs(", \"get_fast_ns_per_page\": ", f);
	json_num(f, r->get_fast_ns, 2);
	fputs(", \"unpin_ns_per_page\": ", f);
	json_num(f, r->unpin_ns, 2);
	fprintf(f, ", \"pages\": %d, \"pages_per_call\": %d}",
		(int)PIN_PAGES, (int)PIN_BATCH);
}

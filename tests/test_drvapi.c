/* SPDX-License-Identifier: MIT */
/*
 * test_drvapi: what a driver and a caller get besides the memory model.
 *
 *   - hetmm_pagemap_drvdata() gives a driver's ops their device, from any
 *     op on any thread (a copying driver whose every copy asks it);
 *   - the emulated device takes flags: eviction (a device smaller than
 *     the data evicts instead of refusing), COPY_ONLY (every page through
 *     its copy engine, counted), bad flags refused, the old call as it was;
 *   - hetmm_strerror() has hetmm's own words for every errno the public
 *     header documents (read from the header itself), none of them the C
 *     library's, and every call in the header says which errnos it gives.
 */
#include <ctype.h>
#include <stdbool.h>

#include "tdrv.h"

static struct hetmm_ctx *ctx;

/* ------------------------------------------------------------------------
 * Driver data
 */

static void test_drvdata(void)
{
	struct td d;
	char *buf = t_map(32);

	CHECK(hetmm_pagemap_drvdata(NULL) == NULL);
	/* A copying driver: every copy finds its device by the accessor
	 * (td_of), in migrations and in the handler's faults. */
	REQUIRE_OK(td_add(ctx, &d, 64, TD_COPY, HETMM_MEMORY_DEVICE_PRIVATE,
			  0));
	CHECK(hetmm_pagemap_drvdata(d.pg) == &d);
	t_fill(buf, 32, 5);
	CHECK_OK(hetmm_migrate_to_device(d.pg, buf, 32 * PS, NULL));
	CHECK_EQ(t_count_on_device(ctx, buf, 32), 32);
	/* The bytes were copied into the driver's memory by the op. */
	t_verify_from(d.mem, 32, 5, 0);
	t_verify(buf, 32, 5);             /* faults: copies back */
	CHECK_EQ(t_count_on_device(ctx, buf, 32), 0);
	CHECK_OK(hetmm_pagemap_remove(d.pg));
	td_free(&d);
	t_unmap(buf, 32);
}

/* ------------------------------------------------------------------------
 * The emulated device's flags
 */

#define DEV_PAGES 64
#define DATA_PAGES 256

static struct hetmm_emu *emu_new(enum hetmm_memory_type type, uint64_t nr,
				 uint32_t flags)
{
	struct hetmm_emu_desc d = { type, nr, flags };
	struct hetmm_emu *emu = NULL;

	REQUIRE_OK(hetmm_emu_create_desc(ctx, &d, &emu));
	return emu;
}

static struct hetmm_pagemap *emu_pg(struct hetmm_emu *emu)
{
	struct hetmm_pagemap *pg = NULL;

	REQUIRE_OK(hetmm_emu_pagemap(emu, &pg));
	return pg;
}

static struct hetmm_emu_stats emu_stats(struct hetmm_emu *emu)
{
	struct hetmm_emu_stats s;

	REQUIRE_OK(hetmm_emu_get_stats(emu, &s));
	return s;
}

/* Slices of the device's size, one after another: each evicts the last,
 * every byte kept. */
static void test_emu_evict(void)
{
	struct hetmm_emu *emu = emu_new(HETMM_MEMORY_DEVICE_PRIVATE, DEV_PAGES,
					HETMM_PAGEMAP_EVICT);
	char *buf = t_map(DATA_PAGES);

	t_fill(buf, DATA_PAGES, 7);
	struct hetmm_stats s0 = t_stats(ctx);
	for (size_t a = 0; a < DATA_PAGES; a += DEV_PAGES) {
		CHECK_OK(hetmm_migrate_to_device(emu_pg(emu), buf + a * PS,
						 DEV_PAGES * PS, NULL));
		CHECK_EQ(t_count_on_device(ctx, buf + a * PS, DEV_PAGES),
			 DEV_PAGES);
	}
	struct hetmm_stats s1 = t_stats(ctx);
	CHECK_EQ(s1.evictions - s0.evictions, DATA_PAGES - DEV_PAGES);
	CHECK_EQ(t_count_on_device(ctx, buf, DATA_PAGES), DEV_PAGES);
	t_verify(buf, DATA_PAGES, 7);
	CHECK_OK(hetmm_emu_destroy(emu));

	/* The same device without the flag: full is full. */
	emu = emu_new(HETMM_MEMORY_DEVICE_PRIVATE, DEV_PAGES, 0);
	CHECK_OK(hetmm_migrate_to_device(emu_pg(emu), buf, DEV_PAGES * PS,
					 NULL));
	CHECK_EQ(hetmm_migrate_to_device(emu_pg(emu), buf + DEV_PAGES * PS,
					 DEV_PAGES * PS, NULL), -ENOMEM);
	CHECK_EQ(t_stats(ctx).evictions, s1.evictions);
	t_verify(buf, DATA_PAGES, 7);
	CHECK_OK(hetmm_emu_destroy(emu));
	t_unmap(buf, DATA_PAGES);
}

/* COPY_ONLY: the device's engine copies every page, both ways. */
static void test_emu_copy_only(void)
{
	struct hetmm_emu *emu = emu_new(HETMM_MEMORY_DEVICE_PRIVATE, DEV_PAGES,
					HETMM_EMU_COPY_ONLY);
	char *buf = t_map(32);

	t_fill(buf, 32, 9);
	CHECK_OK(hetmm_migrate_to_device(emu_pg(emu), buf, 32 * PS, NULL));
	CHECK_EQ(emu_stats(emu).copied_to_device, 32);
	CHECK_EQ(emu_stats(emu).copied_from_device, 0);
	CHECK_OK(hetmm_migrate_to_system(ctx, buf, 32 * PS, NULL));
	CHECK_EQ(emu_stats(emu).copied_from_device, 32);
	CHECK_EQ(emu_stats(emu).copied_from_peer, 0);
	t_verify(buf, 32, 9);
	CHECK_OK(hetmm_emu_destroy(emu));

	/* Without it, and where the kernel moves pages, nothing is copied:
	 * the counters count the engine, not the migrations. */
	struct hetmm_kernel_info ki;
	REQUIRE_OK(hetmm_kernel_probe(&ki));
	emu = emu_new(HETMM_MEMORY_DEVICE_PRIVATE, DEV_PAGES, 0);
	CHECK_OK(hetmm_migrate_to_device(emu_pg(emu), buf, 32 * PS, NULL));
	CHECK_OK(hetmm_migrate_to_system(ctx, buf, 32 * PS, NULL));
	if (ki.has_move) {
		CHECK_EQ(emu_stats(emu).copied_to_device, 0);
		CHECK_EQ(emu_stats(emu).copied_from_device, 0);
	}
	t_verify(buf, 32, 9);
	CHECK_OK(hetmm_emu_destroy(emu));
	t_unmap(buf, 32);
}

static void test_emu_bad_desc(void)
{
	struct hetmm_emu *emu = NULL;
	struct hetmm_emu_desc d = { HETMM_MEMORY_DEVICE_PRIVATE, 16, 0 };
	struct hetmm_emu_stats st;

	CHECK_EQ(hetmm_emu_create_desc(ctx, NULL, &emu), -EINVAL);
	CHECK_EQ(hetmm_emu_create_desc(NULL, &d, &emu), -EINVAL);
	CHECK_EQ(hetmm_emu_create_desc(ctx, &d, NULL), -EINVAL);
	d.flags = 1u << 30;
	CHECK_EQ(hetmm_emu_create_desc(ctx, &d, &emu), -EINVAL);
	d.flags = HETMM_PAGEMAP_REMAP;            /* hetmm's, not the user's */
	CHECK_EQ(hetmm_emu_create_desc(ctx, &d, &emu), -EINVAL);
	d.flags = HETMM_PAGEMAP_MANAGED;
	CHECK_EQ(hetmm_emu_create_desc(ctx, &d, &emu), -EINVAL);
	d.flags = 0;
	d.nr_pages = 0;
	CHECK_EQ(hetmm_emu_create_desc(ctx, &d, &emu), -EINVAL);
	d.nr_pages = 16;
	d.type = HETMM_MEMORY_DEVICE_COHERENT;
	d.flags = HETMM_EMU_COPY_ONLY;
	CHECK_EQ(hetmm_emu_create_desc(ctx, &d, &emu), -EINVAL);
	d.flags = 0;
	d.type = HETMM_MEMORY_FS_DAX;
	CHECK_EQ(hetmm_emu_create_desc(ctx, &d, &emu), -EOPNOTSUPP);
	d.type = (enum hetmm_memory_type)0;
	CHECK_EQ(hetmm_emu_create_desc(ctx, &d, &emu), -EINVAL);
	CHECK(emu == NULL);
	/* The old call is the desc with flags 0. */
	CHECK_EQ(hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_PRIVATE, 0, &emu),
		 -EINVAL);
	REQUIRE_OK(hetmm_emu_create(ctx, HETMM_MEMORY_DEVICE_PRIVATE, 16,
				    &emu));
	CHECK_EQ(hetmm_emu_get_stats(emu, NULL), -EINVAL);
	CHECK_EQ(hetmm_emu_get_stats(NULL, &st), -EINVAL);
	CHECK_OK(hetmm_emu_destroy(emu));
	CHECK_EQ(hetmm_emu_get_stats(emu, &st), -EINVAL);   /* stale */
}

/* ------------------------------------------------------------------------
 * Errors
 */

static const struct {
	const char *name;
	int val;
} errnos[] = {
	{ "EPERM", EPERM }, { "ENOENT", ENOENT }, { "EINTR", EINTR },
	{ "EIO", EIO }, { "ENXIO", ENXIO }, { "E2BIG", E2BIG },
	{ "EBADF", EBADF }, { "ECHILD", ECHILD }, { "EAGAIN", EAGAIN },
	{ "ENOMEM", ENOMEM }, { "EACCES", EACCES }, { "EFAULT", EFAULT },
	{ "EBUSY", EBUSY }, { "EEXIST", EEXIST }, { "ENODEV", ENODEV },
	{ "EINVAL", EINVAL }, { "EMFILE", EMFILE }, { "ENOSPC", ENOSPC },
	{ "ERANGE", ERANGE }, { "EDEADLK", EDEADLK }, { "ENOSYS", ENOSYS },
	{ "EOVERFLOW", EOVERFLOW }, { "EOPNOTSUPP", EOPNOTSUPP },
	{ "EREMOTEIO", EREMOTEIO }, { "ETIMEDOUT", ETIMEDOUT },
	{ "EHWPOISON", EHWPOISON }, { "ESRCH", ESRCH }, { "EPROTO", EPROTO },
};

static int errno_value(const char *name)
{
	for (size_t i = 0; i < sizeof(errnos) / sizeof(errnos[0]); i++)
		if (!strcmp(errnos[i].name, name))
			return errnos[i].val;
	return 0;
}

static char *read_header(void)
{
	FILE *f = fopen(HETMM_HEADER, "r");
	REQUIRE(f);
	static char text[1 << 20];
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	REQUIRE(n > 0 && n < sizeof(text) - 1);
	text[n] = 0;
	fclose(f);
	return text;
}

/* Every "-EXXX" of the header: a name this test knows, and a meaning of
 * hetmm's own, not the C library's and not the fallback. */
static void test_strerror(const char *h)
{
	const char *other = hetmm_strerror(-EHWPOISON);  /* never hetmm's */
	const char *seen[64];
	int nseen = 0;

	CHECK(strcmp(hetmm_strerror(0), "success") == 0);
	CHECK(hetmm_strerror(-ETIMEDOUT) == other);
	CHECK(hetmm_strerror(12345) == other);
	CHECK(strstr(hetmm_strerror(-ENOENT), "file") == NULL);
	for (const char *p = h; (p = strstr(p, "-E")) != NULL; p++) {
		char name[32];
		size_t n = 0;
		while (n + 1 < sizeof(name) &&
		       (isupper((unsigned char)p[1 + n]) ||
			isdigit((unsigned char)p[1 + n])))
			name[n] = p[1 + n], n++;
		name[n] = 0;
		if (n < 3)
			continue;
		int v = errno_value(name);
		if (!v) {
			t_fail(__FILE__, __LINE__, "header names -%s, which "
			       "this test does not know", name);
			continue;
		}
		const char *s = hetmm_strerror(-v);
		if (s == other || !s[0] || !strcmp(s, strerror(v)))
			t_fail(__FILE__, __LINE__, "hetmm_strerror(-%s) has "
			       "no meaning of hetmm's: \"%s\"", name, s);
		CHECK(hetmm_strerror(v) == s);
		int dup = 0;
		for (int k = 0; k < nseen; k++)
			dup |= seen[k] == s;
		if (!dup && nseen < 64)
			seen[nseen++] = s;
	}
	/* The scan saw the header's errnos, each with words of its own. */
	CHECK(nseen >= 12);
	for (int i = 0; i < nseen; i++)
		for (int k = 0; k < i; k++)
			CHECK(strcmp(seen[i], seen[k]) != 0);
}

/*
 * Every public call's contract names its errnos: the comment right above
 * its declaration (only blanks between), or above the run of adjacent
 * declarations it belongs to, says "-E..." somewhere, or "never fails".
 * Calls that return pointers (the accessor, strerror) are exempt.
 */
static bool comment_names_errno(const char *h, const char *decl)
{
	const char *q = decl;
	while (q > h && isspace((unsigned char)q[-1]))
		q--;
	if (q - h < 2 || q[-2] != '*' || q[-1] != '/')
		return false;
	const char *end = q;
	while (q > h + 1 && !(q[-2] == '/' && q[-1] == '*'))
		q--;
	for (; q + 2 < end; q++) {
		if (q[0] == '-' && q[1] == 'E' && isupper((unsigned char)q[2]))
			return true;
		if (!strncmp(q, "never fails", 11))
			return true;
	}
	return false;
}

static bool is_decl(const char *line)
{
	return !strncmp(line, "int hetmm_", 10) ||
	       !strncmp(line, "long hetmm_", 11) ||
	       !strncmp(line, "const char *hetmm_", 18) ||
	       !strncmp(line, "void *hetmm_", 12);
}

static void test_calls_documented(const char *h)
{
	int calls = 0;
	const char *run = NULL;     /* first declaration of the current run */

	for (const char *line = h; *line;) {
		const char *eol = strchr(line, '\n');
		if (is_decl(line)) {
			calls++;
			if (!run)
				run = line;
			bool exempt = !strncmp(line, "void *", 6) ||
				      !strncmp(line, "const char *", 12);
			if (!exempt && !comment_names_errno(h, run))
				t_fail(__FILE__, __LINE__,
				       "no errno documented for %.*s",
				       (int)(strchr(line, '(') - line), line);
			/* The declaration ends at its ';'. */
			const char *semi = strchr(line, ';');
			REQUIRE(semi);
			eol = strchr(semi, '\n');
		} else {
			run = NULL;
		}
		if (!eol)
			break;
		line = eol + 1;
	}
	CHECK(calls >= 40);
}

int main(void)
{
	REQUIRE_OK(hetmm_ctx_create(&ctx, NULL));
	test_drvdata();
	test_emu_evict();
	test_emu_copy_only();
	test_emu_bad_desc();
	const char *h = read_header();
	test_strerror(h);
	test_calls_documented(h);
	CHECK_OK(hetmm_ctx_destroy(ctx));
	return t_done();
}

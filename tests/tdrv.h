/* SPDX-License-Identifier: MIT */
/*
 * tdrv.h - a tiny device driver for tests that need pagemap flags the
 * emulated device does not offer (eviction) or CPU-addressable memory
 * (FS_DAX, GENERIC).
 *
 *   TD_COPY   private memory, copy callbacks only (staging copies)
 *   TD_REMAP  untouched anonymous memory hetmm moves pages into
 *   TD_FIXED  memory mapped in place: anonymous (GENERIC) or a file in
 *             /dev/shm, unlinked at once (FS_DAX)
 */
#ifndef HETMM_TDRV_H
#define HETMM_TDRV_H

#include "t.h"

enum td_mode { TD_COPY, TD_REMAP, TD_FIXED };

struct td {
	uint64_t nr;
	unsigned char *mem;
	enum td_mode mode;
	struct hetmm_pagemap *pg;
};

static inline struct td *td_of(struct hetmm_pagemap *pg)
{
	return hetmm_pagemap_drvdata(pg);
}

static inline int td_copy_to(struct hetmm_pagemap *pg, uint64_t index,
			     const void *src, size_t nr)
{
	struct td *d = td_of(pg);

	if (!d || index + nr > d->nr)
		return -EINVAL;
	return hetmm_copy_from_process(d->mem + index * PS, src, nr * PS);
}

static inline int td_copy_from(struct hetmm_pagemap *pg, void *dst,
			       uint64_t index, size_t nr)
{
	struct td *d = td_of(pg);

	if (!d || index + nr > d->nr)
		return -EINVAL;
	memcpy(dst, d->mem + index * PS, nr * PS);
	return 0;
}

static inline void *td_address(struct hetmm_pagemap *pg, uint64_t index)
{
	struct td *d = td_of(pg);

	return d && index < d->nr ? d->mem + index * PS : NULL;
}

static const struct hetmm_pagemap_ops td_ops_copy = {
	.copy_to_device = td_copy_to,
	.copy_from_device = td_copy_from,
};

static const struct hetmm_pagemap_ops td_ops_addr = {
	.copy_to_device = td_copy_to,
	.copy_from_device = td_copy_from,
	.page_address = td_address,
};

static const struct hetmm_pagemap_ops td_ops_fixed = {
	.page_address = td_address,
};

static inline unsigned char *td_map_file(uint64_t nr)
{
	char path[] = "/dev/shm/hetmm-test-XXXXXX";
	int fd = mkstemp(path);
	void *p;

	REQUIRE(fd >= 0);
	unlink(path);
	REQUIRE(ftruncate(fd, (off_t)(nr * PS)) == 0);
	p = mmap(NULL, nr * PS, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	REQUIRE(p != MAP_FAILED);
	return p;
}

/* A pagemap of nr pages of type with extra desc flags and ops of the
 * test's own (NULL: the mode's); rc of the add. */
static inline int td_add_ops(struct hetmm_ctx *ctx, struct td *d,
			     uint64_t nr, enum td_mode mode,
			     enum hetmm_memory_type type, uint32_t flags,
			     const struct hetmm_pagemap_ops *ops)
{
	struct hetmm_pagemap_desc desc;

	memset(d, 0, sizeof(*d));
	d->nr = nr;
	d->mode = mode;
	if (mode == TD_FIXED && type == HETMM_MEMORY_FS_DAX)
		d->mem = td_map_file(nr);
	else
		d->mem = t_map(nr);
	memset(&desc, 0, sizeof(desc));
	desc.type = type;
	desc.nr_pages = nr;
	desc.ops = ops ? ops : mode == TD_COPY ? &td_ops_copy :
		   mode == TD_REMAP ? &td_ops_addr : &td_ops_fixed;
	desc.flags = flags | (mode == TD_REMAP ? HETMM_PAGEMAP_REMAP : 0);
	desc.drvdata = d;
	desc.owner = d;
	return hetmm_pagemap_add(ctx, &desc, &d->pg);
}

static inline int td_add(struct hetmm_ctx *ctx, struct td *d, uint64_t nr,
			 enum td_mode mode, enum hetmm_memory_type type,
			 uint32_t flags)
{
	return td_add_ops(ctx, d, nr, mode, type, flags, NULL);
}

/* Unmap the device memory (after the pagemap is gone). */
static inline void td_free(struct td *d)
{
	t_unmap(d->mem, d->nr);
	d->mem = NULL;
}

#endif /* HETMM_TDRV_H */

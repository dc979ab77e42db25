/* SPDX-License-Identifier: MIT */
/*
 * kframes.h - the zero page and huge mappings told from the frames the
 * kernel maps (/proc/self/pagemap's frame numbers, /proc/kpageflags),
 * where the PAGEMAP_SCAN ioctl that tells them directly is missing.
 */
#ifndef HETMM_KFRAMES_H
#define HETMM_KFRAMES_H

#include "base.h"

struct kframes {
	int kpageflags_fd;   /* /proc/kpageflags, -1 if it can't be read */
	bool frames_shown;   /* pagemap gives frame numbers (CAP_SYS_ADMIN) */
};

/* Finds out what this process may read; never fails (usable() says). */
void kframes_open(struct kframes *kf, int pagemap_fd);
void kframes_close(struct kframes *kf);

/* Can the zero page and huge mappings be told this way (as root)? */
static inline bool kframes_usable(const struct kframes *kf)
{
	return kf->frames_shown && kf->kpageflags_fd >= 0;
}

/*
 * Add PG_ZERO and PG_HUGE (vma.h) to flags[] for the npages from start,
 * all inside [vma_start, vma_end), whose raw pagemap entries are ents[]:
 * the zero page by its frame number (found once per process), a huge
 * mapping by a whole aligned PMD-sized block of one huge page's frames.
 */
void kframes_page_flags(const struct kframes *kf, int pagemap_fd,
			uintptr_t vma_start, uintptr_t vma_end,
			uintptr_t start, size_t npages, const uint64_t *ents,
			uint8_t *flags);

#endif /* HETMM_KFRAMES_H */

/* SPDX-License-Identifier: MIT */
/*
 * uffd.h - opening and driving a userfaultfd: the best route to one, and
 * the COPY/ZEROPAGE/MOVE/WRITEPROTECT/WAKE ioctls with their retries;
 * which of its event messages change a range.
 */
#ifndef HETMM_UFFD_H
#define HETMM_UFFD_H

#include "base.h"

struct uffd {
	int fd;
	enum hetmm_uffd_route route;
	int route_errno;
	uint64_t offered;  /* what UFFDIO_API offers */
	uint64_t features; /* what this fd was opened with */
};

int uffd_open(struct uffd *u, uint64_t want_features);
void uffd_close(struct uffd *u);
int uffd_register(int fd, uintptr_t start, size_t len, uint64_t mode,
		  uint64_t *ioctls);
int uffd_unregister(int fd, uintptr_t start, size_t len);
#define WP_ON (1u << 2)  /* protect; without it, lift and wake */
/* UFFDIO_WRITEPROTECT; flags WP_ON and FILL_ONCE (below). */
int uffd_writeprotect(int fd, uintptr_t start, size_t len, unsigned flags);
enum uffd_fill { FILL_COPY, FILL_ZERO, FILL_MOVE };
#define FILL_WAKE (1u << 0)  /* wake the range's waiters when filled */
/* Don't retry EAGAIN.  The kernel gives it while an event (munmap,
 * madvise, mremap) waits to be read; only the handler reads events, so
 * the handler must give up, read, and let the thread fault again. */
#define FILL_ONCE (1u << 1)
/* With FILL_ONCE, on the handler: it has read the events that wait, and
 * those it has not handled yet (away.h) touch none of the range, so the
 * kernel alone says whether the fill may go in. */
#define FILL_EVENTS_SEEN (1u << 4)
/* UFFDIO_COPY only: the page is installed write-protected. */
#define FILL_WP (1u << 3)
/* Lift the range's uffd-wp markers (marker.h), which UFFDIO_MOVE,
 * _ZEROPAGE and _POISON take for a page there (EEXIST): before a move or
 * a poison, and on EEXIST before a zero page's second try.  UFFDIO_COPY
 * replaces a marker. */
#define FILL_UNMARK (1u << 5)
/* Fill [dst, dst + len) by UFFDIO_COPY/ZEROPAGE/MOVE from src: bytes
 * done, or -errno if it stopped at the first page. */
long uffd_fill(int fd, enum uffd_fill op, uintptr_t dst, uintptr_t src,
	       size_t len, unsigned flags);
int uffd_wake(int fd, uintptr_t start, size_t len);
/* Does an event of the process's (munmap, madvise, mremap) wait to be
 * read, or has one been read so late that its caller has not gone on
 * yet?  The kernel refuses every ioctl that changes the address space
 * while one does (EAGAIN); this asks with one that changes nothing. */
bool uffd_events_pending(int fd);
/* UFFDIO_POISON (6.6, UFFD_FEATURE_POISON): an access to the range gets
 * SIGBUS until a fill replaces the marker; wakes the range.  flags:
 * FILL_ONCE, FILL_UNMARK (the kernel refuses to poison over a uffd-wp
 * marker). */
int uffd_poison(int fd, uintptr_t start, size_t len, unsigned flags);

struct uffd_msg;
/* Does an event among msgs[0, n) (munmap, madvise, mremap) change the
 * mapping of a page of [start, end) (for mremap, its old place or its
 * new one)? */
bool uffd_event_in(const struct uffd_msg *msgs, size_t n, uintptr_t start,
		   uintptr_t end);

#endif /* HETMM_UFFD_H */

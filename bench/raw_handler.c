/* SPDX-License-Identifier: MIT */
/*
 * raw_handler.c - the bare userfaultfd fault handler thread of the
 * baselines (raw_handler.h).
 */
#include "raw_handler.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compat.h"
#include "common.h"

/* Where the bytes of the region's page at off are in src.  The entry
 * table stands for the least a library with per-page state does on a
 * fault: one load, which a random access finds cold, before the copy. */
static size_t source_offset(struct raw_handler *h, size_t off)
{
	const uint64_t *ent = (const uint64_t *)atomic_load_explicit(
		&h->entries, memory_order_relaxed);

	return ent ? (size_t)ent[off / PAGE] : off;
}

static void *raw_handler_main(void *arg)
{
	struct raw_handler *h = arg;

	atomic_store(&h->tid, (int)syscall(SYS_gettid));
	for (;;) {
		struct uffd_msg msg;
		struct uffdio_copy c;
		uintptr_t a, base;
		size_t len, n;
		ssize_t r = read(h->fd, &msg, sizeof(msg));

		if (r < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			atomic_store(&h->error, errno);
			break;
		}
		if (r != (ssize_t)sizeof(msg) || msg.event != UFFD_EVENT_PAGEFAULT)
			continue;
		a = (uintptr_t)msg.arg.pagefault.address & ~(uintptr_t)(PAGE - 1);
		if (a == (uintptr_t)h->stop_page) {
			struct uffdio_zeropage z;

			z.range.start = a;
			z.range.len = PAGE;
			z.mode = 0;
			(void)ioctl(h->fd, UFFDIO_ZEROPAGE, &z);
			break;
		}
		base = atomic_load_explicit(&h->base, memory_order_relaxed);
		len = atomic_load_explicit(&h->len, memory_order_relaxed);
		n = h->window;
		if (a < base || a >= base + len) {
			n = PAGE; /* not ours: still resolve it */
		} else if (a + n > base + len) {
			n = base + len - a;
		}
		if (h->use_move) {
			struct uffdio_move m;

			m.dst = a;
			m.src = atomic_load_explicit(&h->src,
						     memory_order_relaxed) +
				(a - base);
			m.len = n;
			m.mode = 0;
			m.move = 0;
			if (ioctl(h->fd, UFFDIO_MOVE, &m)) {
				struct uffdio_range w = { .start = a, .len = PAGE };

				if (errno != EEXIST && errno != EAGAIN)
					atomic_store(&h->error, errno);
				(void)ioctl(h->fd, UFFDIO_WAKE, &w);
			}
			atomic_fetch_add_explicit(&h->faults, 1,
						  memory_order_relaxed);
			continue;
		}
		c.dst = a;
		c.src = atomic_load_explicit(&h->src, memory_order_relaxed);
		if (!atomic_load_explicit(&h->src_single, memory_order_relaxed))
			c.src += source_offset(h, a - base);
		c.len = n;
		c.mode = 0;
		c.copy = 0;
		if (ioctl(h->fd, UFFDIO_COPY, &c)) {
			if (errno == EEXIST || (errno == EAGAIN && c.copy > 0)) {
				struct uffdio_range w = { .start = a, .len = PAGE };

				(void)ioctl(h->fd, UFFDIO_WAKE, &w);
			} else if (errno == EAGAIN) {
				/* retried by the faulting thread */
				struct uffdio_range w = { .start = a, .len = PAGE };

				(void)ioctl(h->fd, UFFDIO_WAKE, &w);
			} else {
				atomic_store(&h->error, errno);
			}
		}
		atomic_fetch_add_explicit(&h->faults, 1, memory_order_relaxed);
	}
	return NULL;
}

int raw_handler_start(struct raw_handler *h, const char *src, int src_single,
		      size_t window, int use_move)
{
	int rc;
	uint64_t got = 0;

	memset(h, 0, sizeof(*h));
	h->use_move = use_move;
	h->fd = uffd_open_features(use_move ? UFFD_FEATURE_MOVE : 0, 0, &got);
	if (h->fd >= 0 && use_move && !(got & UFFD_FEATURE_MOVE)) {
		close(h->fd);
		return -EOPNOTSUPP;
	}
	if (h->fd < 0)
		return h->fd;
	h->stop_page = map_anon(PAGE, 0);
	if (!h->stop_page) {
		close(h->fd);
		return -ENOMEM;
	}
	rc = uffd_register_missing(h->fd, h->stop_page, PAGE, NULL);
	if (rc) {
		munmap(h->stop_page, PAGE);
		close(h->fd);
		return rc;
	}
	atomic_store(&h->src, (uintptr_t)src);
	atomic_store(&h->src_single, src_single);
	h->window = window;
	rc = pthread_create(&h->thr, NULL, raw_handler_main, h);
	if (rc) {
		munmap(h->stop_page, PAGE);
		close(h->fd);
		return -rc;
	}
	while (!atomic_load(&h->tid))
		sched_yield();
	return 0;
}

void raw_handler_stop(struct raw_handler *h)
{
	g_sink += *(volatile char *)h->stop_page;
	pthread_join(h->thr, NULL);
	munmap(h->stop_page, PAGE);
	close(h->fd);
}

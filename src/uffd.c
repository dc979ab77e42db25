/* SPDX-License-Identifier: MIT */
/*
 * uffd.c - open a userfaultfd by the best route and wrap its ioctls.
 *
 * Routes, best first: the userfaultfd(2) syscall (needs CAP_SYS_PTRACE or
 * vm.unprivileged_userfaultfd=1), /dev/userfaultfd (needs access to the
 * node), and the syscall with UFFD_USER_MODE_ONLY, which any process may
 * use but which does not catch faults the kernel takes on the process's
 * behalf: a read(2) into a device-resident buffer fails with EFAULT
 * instead of migrating the page back.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "away.h"
#include "compat.h"
#include "uffd.h"

static int open_by_syscall(int flags)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | flags);
	return fd < 0 ? -errno : fd;
}

static int open_by_devnode(void)
{
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev < 0)
		return -errno;
	int fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC);
	int err = errno;
	close(dev);
	return fd < 0 ? -err : fd;
}

/*
 * UFFDIO_API may be called once per fd.  Ask for what we want of what the
 * kernel offers, which a first probe on a throwaway fd tells.
 */
static int api_handshake(int fd, uint64_t want, uint64_t *got)
{
	struct uffdio_api api = { .api = UFFD_API, .features = want };
	if (ioctl(fd, UFFDIO_API, &api) < 0)
		return -errno;
	*got = api.features;
	return 0;
}

static int open_route(enum hetmm_uffd_route route)
{
	switch (route) {
	case HETMM_UFFD_SYSCALL:
		return open_by_syscall(0);
	case HETMM_UFFD_DEVNODE:
		return open_by_devnode();
	case HETMM_UFFD_USER_MODE_ONLY:
		return open_by_syscall(UFFD_USER_MODE_ONLY);
	}
	return -EINVAL;
}

int uffd_open(struct uffd *u, uint64_t want_features)
{
	memset(u, 0, sizeof(*u));
	u->fd = -1;
	int first_err = 0;
	for (int r = HETMM_UFFD_SYSCALL; r <= HETMM_UFFD_USER_MODE_ONLY; r++) {
		int probe = open_route((enum hetmm_uffd_route)r);
		if (probe < 0) {
			if (!first_err)
				first_err = probe;
			continue;
		}
		/* Learn the offered features on a throwaway fd, then ask
		 * the real one for the subset we want. */
		uint64_t offered = 0;
		int rc = api_handshake(probe, 0, &offered);
		close(probe);
		if (rc < 0) {
			if (!first_err)
				first_err = rc;
			continue;
		}
		int fd = open_route((enum hetmm_uffd_route)r);
		if (fd < 0)
			return fd;
		rc = api_handshake(fd, want_features & offered, &u->features);
		if (rc < 0) {
			close(fd);
			return rc;
		}
		/* The kernel answers with every feature it has, not the
		 * ones it enabled: ours are those we asked for. */
		u->features &= want_features;
		u->fd = fd;
		u->offered = offered;
		u->route = (enum hetmm_uffd_route)r;
		u->route_errno = first_err;
		return 0;
	}
	u->route_errno = first_err;
	return first_err ? first_err : -ENOSYS;
}

void uffd_close(struct uffd *u)
{
	if (u->fd >= 0)
		close(u->fd);
	u->fd = -1;
}

int uffd_register(int fd, uintptr_t start, size_t len, uint64_t mode,
		  uint64_t *ioctls)
{
	struct uffdio_register reg = {
		.range = { .start = start, .len = len },
		.mode = mode,
	};
	if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	if (ioctls)
		*ioctls = reg.ioctls;
	return 0;
}

int uffd_unregister(int fd, uintptr_t start, size_t len)
{
	struct uffdio_range r = { .start = start, .len = len };
	return ioctl(fd, UFFDIO_UNREGISTER, &r) < 0 ? -errno : 0;
}

/*
 * An ioctl refused with EAGAIN: the kernel holds an event (an munmap's,
 * a madvise's, a fork's) that the handler has yet to read.  Give the CPU
 * up before asking again: with two CPUs and the handler waiting for
 * one, a tight retry can keep it from reading for a whole time slice
 * (1,600-3,800 retries were counted in one file destroy).
 */
static void events_wait(void)
{
	sched_yield();
}

int uffd_writeprotect(int fd, uintptr_t start, size_t len, unsigned flags)
{
	struct uffdio_writeprotect w = {
		.range = { .start = start, .len = len },
		.mode = (flags & WP_ON) ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};
	if ((flags & FILL_ONCE) && away_events_held())
		return -EAGAIN;
	for (;;) {
		if (ioctl(fd, UFFDIO_WRITEPROTECT, &w) == 0)
			return 0;
		if (errno != EAGAIN || (flags & FILL_ONCE))
			return -errno;
		events_wait();
	}
}

/* One UFFDIO_COPY, _ZEROPAGE or _MOVE: its progress field, or -errno. */
static long fill_once(int fd, enum uffd_fill op, uintptr_t dst, uintptr_t src,
		      size_t len, bool wake, bool wp)
{
	int rc;
	long progress;
	switch (op) {
	case FILL_COPY: {
		struct uffdio_copy c = {
			.dst = dst, .src = src, .len = len,
			.mode = (wake ? 0 : UFFDIO_COPY_MODE_DONTWAKE) |
				(wp ? UFFDIO_COPY_MODE_WP : 0),
		};
		rc = ioctl(fd, UFFDIO_COPY, &c);
		progress = (long)c.copy;
		break;
	}
	case FILL_ZERO: {
		struct uffdio_zeropage z = {
			.range = { .start = dst, .len = len },
			.mode = wake ? 0 : UFFDIO_ZEROPAGE_MODE_DONTWAKE,
		};
		rc = ioctl(fd, UFFDIO_ZEROPAGE, &z);
		progress = (long)z.zeropage;
		break;
	}
	case FILL_MOVE: {
		struct uffdio_move m = {
			.dst = dst, .src = src, .len = len,
			.mode = wake ? 0 : UFFDIO_MOVE_MODE_DONTWAKE,
		};
		rc = ioctl(fd, UFFDIO_MOVE, &m);
		progress = (long)m.move;
		break;
	}
	default:
		return -EINVAL;
	}
	if (rc == 0)
		return progress;
	/* On failure the progress field holds bytes done or -errno. */
	return progress > 0 ? progress : -errno;
}

/* UFFDIO_WRITEPROTECT mode 0 turns a marker back into an empty entry;
 * the range's waiters stay asleep (the move that follows wakes them). */
static int lift_markers(int fd, uintptr_t dst, size_t len, unsigned once)
{
	struct uffdio_writeprotect w = {
		.range = { .start = dst, .len = len },
		.mode = UFFDIO_WRITEPROTECT_MODE_DONTWAKE,
	};
	while (ioctl(fd, UFFDIO_WRITEPROTECT, &w) < 0) {
		if (errno != EAGAIN)
			return 0;   /* the move says what is wrong */
		if (once)
			return -EAGAIN;
		events_wait();
	}
	return 0;
}

long uffd_fill(int fd, enum uffd_fill op, uintptr_t dst, uintptr_t src,
	       size_t len, unsigned flags)
{
	bool wake = flags & FILL_WAKE;
	size_t done = 0;
	if ((flags & FILL_ONCE) && !(flags & FILL_EVENTS_SEEN) &&
	    away_events_held())
		return -EAGAIN;
	/* A device page's move in lifts its marker first: every such page
	 * has one.  A zero page meets one only where the marked page was a
	 * zero page on the device, or a migration's write protection met
	 * a page zapped under it: lifted when the kernel says so. */
	bool unmark = flags & FILL_UNMARK;
	if (op == FILL_MOVE && unmark) {
		int rc = lift_markers(fd, dst, len, flags & FILL_ONCE);
		if (rc)
			return rc;
	}
	while (done < len) {
		long got = fill_once(fd, op, dst + done,
				     op == FILL_ZERO ? 0 : src + done,
				     len - done, wake, flags & FILL_WP);
		if (got > 0) {
			done += (size_t)got;
			continue;
		}
		if (got == -EAGAIN && !(flags & FILL_ONCE)) {
			events_wait();
			continue;
		}
		if (got == -EEXIST && op == FILL_ZERO && unmark) {
			unmark = false;
			got = lift_markers(fd, dst + done, len - done,
					   flags & FILL_ONCE);
			if (!got)
				continue;
		}
		return done ? (long)done : got;
	}
	return (long)done;
}

int uffd_wake(int fd, uintptr_t start, size_t len)
{
	struct uffdio_range r = { .start = start, .len = len };
	return ioctl(fd, UFFDIO_WAKE, &r) < 0 ? -errno : 0;
}

bool uffd_events_pending(int fd)
{
	/* Page 1 is never mapped (mmap_min_addr), so the ioctl changes
	 * nothing once the kernel lets it through: it answers ENOENT. */
	struct uffdio_writeprotect w = {
		.range = { .start = PAGE_SIZE, .len = PAGE_SIZE },
		.mode = UFFDIO_WRITEPROTECT_MODE_DONTWAKE,
	};
	return ioctl(fd, UFFDIO_WRITEPROTECT, &w) < 0 && errno == EAGAIN;
}

int uffd_poison(int fd, uintptr_t start, size_t len, unsigned flags)
{
	struct uffdio_poison p = {
		.range = { .start = start, .len = len },
	};
	if ((flags & FILL_ONCE) && away_events_held())
		return -EAGAIN;
	if (flags & FILL_UNMARK) {
		int rc = lift_markers(fd, start, len, flags & FILL_ONCE);
		if (rc)
			return rc;
	}
	while (ioctl(fd, UFFDIO_POISON, &p) < 0) {
		if (errno != EAGAIN || (flags & FILL_ONCE))
			return -errno;
		events_wait();
	}
	return 0;
}

static bool overlap(uintptr_t a, uintptr_t a_end, uintptr_t b,
		    uintptr_t b_end)
{
	return a < b_end && b < a_end;
}

bool uffd_event_in(const struct uffd_msg *msgs, size_t n, uintptr_t start,
		   uintptr_t end)
{
	for (size_t k = 0; k < n; k++) {
		const struct uffd_msg *m = &msgs[k];
		switch (m->event) {
		case UFFD_EVENT_UNMAP:
		case UFFD_EVENT_REMOVE:
			if (overlap(start, end, m->arg.remove.start,
				    m->arg.remove.end))
				return true;
			break;
		case UFFD_EVENT_REMAP:
			if (overlap(start, end, m->arg.remap.from,
				    m->arg.remap.from + m->arg.remap.len) ||
			    overlap(start, end, m->arg.remap.to,
				    m->arg.remap.to + m->arg.remap.len))
				return true;
			break;
		default:
			break;
		}
	}
	return false;
}

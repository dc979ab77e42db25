/* SPDX-License-Identifier: MIT */
/*
 * devices/file.c - the file device: a DEVICE_PRIVATE pagemap whose frames
 * are blocks of a file or a block device, frame i at byte offset + i
 * pages.  A driver on hetmm.h alone, as emu.c is.
 *
 * Copies go through io_uring (its asynchronous submit ops): a request per
 * copy, as many in flight as hetmm's queue for the pagemap has slots, and
 * a completion thread of the device's own that reaps them and calls
 * hetmm_copy_done().  Reads land in hetmm's staging memory, registered
 * once as one fixed buffer; the file is a registered file.  A transfer
 * the kernel cut short is finished with pread/pwrite on the completion
 * thread (rare: a signal, the end of a block device).  A lone page (a
 * random fault's) is read by the thread that waits for it, on a small
 * ring of its own whose completion it polls (lone_read).  Where io_uring is
 * refused, or asked not to be used, the ops are synchronous
 * pread/pwrite.
 *
 * The device goes with its context: hetmm_ctx_destroy() removes its
 * pagemap, then tells every notifier HETMM_EVENT_RELEASE; the device
 * keeps a notifier over a page of its own, as emu.c does, to hear that
 * and free itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef HETMM_HAVE_LIBURING
#include <liburing.h>
#endif

#include "hetmm.h"
#include "handles.h"

#define PS HETMM_PAGE_SIZE

/* Injected errors of one direction (hetmm_file_inject_error). */
struct file_fault {
	_Atomic uint64_t first, end;
	atomic_int err;
};

#ifdef HETMM_HAVE_LIBURING
struct file_seg;

/* One request in flight: what to finish if the kernel cuts it short. */
struct file_req {
	struct file_req *next_free;       /* or the next job */
	struct hetmm_copy *copy;
	struct file_seg *seg;             /* a read ahead's (copy NULL) */
	char *buf;
	uint64_t off;
	size_t len;
	bool write;
	/* A job (ahead_job): frames [index, index + nr) into buf, got
	 * copied so far. */
	uint64_t index;
	size_t nr, got;
};

/* Read-ahead (attached files): AHEAD_SEGS segments of AHEAD_SEG pages
 * each at most, 8 MiB in all (fewer for a smaller file), past where a
 * sequential scan reads: see ahead_fill. */
#define AHEAD_SEG HETMM_COPY_MAX_PAGES
#define AHEAD_SEGS 32

enum seg_state {
	SEG_FREE,
	SEG_READING,
	SEG_READY,
	SEG_DROPPED,      /* reading, but its bytes may be stale: freed
			   * when the read completes */
};

/* Frames [first, first + nr) read ahead into buf. */
struct file_seg {
	struct file_req req;
	char *buf;
	uint64_t first;
	size_t nr;
	enum seg_state state;
	int err;
};
#endif

struct hetmm_file {
	struct drv_handle handle;         /* first: in files */
	struct hetmm_ctx *ctx;
	struct hetmm_pagemap *pgmap;
	int fd;
	uint64_t offset;                  /* of frame 0, bytes */
	uint64_t nr_pages;
	bool punch;                       /* freed frames punch holes */
	/* Freed frames not punched yet, a bit each, and how many: punched
	 * in runs (one fallocate per run, a journaled metadata change on
	 * most filesystems: milliseconds), before any is written again. */
	pthread_mutex_t punch_lock;
	uint64_t *punch_bits;
	uint64_t punch_pending;
	struct hetmm_file_info info;      /* io, direct, errnos */
	atomic_uint_fast64_t pages_read, pages_written, io_errors, punched;
	struct file_fault fault[2];       /* reads, writes */
	struct hetmm_notifier *life;      /* hears the context's release */
	void *quiet;                      /* the page life watches */
	struct file_attach *att;          /* hetmm_file_attach, else NULL */
#ifdef HETMM_HAVE_LIBURING
	struct io_uring ring;
	bool ring_up;
	pthread_mutex_t sq_lock;          /* the submission queue, free */
	struct file_req *reqs, *free_reqs;
	char *staging;                    /* registered: buffer 0 */
	size_t staging_len;
	pthread_t reaper;
	bool reaper_up;
	/* Lone pages (a random fault's) are read on a ring of their own,
	 * by the thread that waits for them: see lone_read(). */
	struct io_uring lone;
	bool lone_up;
	pthread_mutex_t lone_lock;
	/* Read-ahead, an attached file's only (NULL buf: none): see
	 * ahead_fill().  Under sq_lock. */
	struct file_seg ahead[AHEAD_SEGS];
	unsigned ahead_nr;                /* of them in use */
	char *ahead_buf;
	int ahead_fixed;                  /* its fixed buffer, or -1 */
	uint64_t ahead_next;              /* where the last read ended */
	unsigned ahead_reading;           /* segments in flight */
	struct file_req *jobs, **jobs_end; /* reads the segments serve */
	unsigned writes;                  /* writes in flight */
	pthread_cond_t ahead_done;        /* a segment's read completed */
#endif
};

/* The live devices, so that a stale handle is refused. */
static struct drv_handles files = DRV_HANDLES_INIT;

static struct hetmm_file *file_of(struct hetmm_pagemap *pgmap)
{
	return hetmm_pagemap_drvdata(pgmap);
}

static off_t frame_off(const struct hetmm_file *f, uint64_t index)
{
	return (off_t)(f->offset + index * PS);
}

/* The injected error for nr frames from index, or 0. */
static int fault_for(struct hetmm_file *f, bool write, uint64_t index,
		     size_t nr)
{
	struct file_fault *ff = &f->fault[write];
	int err = atomic_load(&ff->err);
	if (!err)
		return 0;
	return index < atomic_load(&ff->end) &&
	       index + nr > atomic_load(&ff->first) ? err : 0;
}

static void count_done(struct hetmm_file *f, bool write, size_t nr, int err)
{
	if (write && err == -EFAULT)
		return;   /* the process took the source away: no error */
	if (err)
		atomic_fetch_add(&f->io_errors, 1);
	else
		atomic_fetch_add(write ? &f->pages_written : &f->pages_read,
				 nr);
}

/* The whole of [buf, buf + len) at off, with pread or pwrite: 0 or a
 * negative errno (-EIO for an end of file in the middle). */
static int io_whole(int fd, bool write, char *buf, size_t len, off_t off)
{
	while (len) {
		ssize_t got = write ? pwrite(fd, buf, len, off)
				    : pread(fd, buf, len, off);
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -errno;
		if (!got)
			return -EIO;
		buf += got;
		len -= (size_t)got;
		off += got;
	}
	return 0;
}

static void attach_faulted_in(struct hetmm_file *f, uint64_t index,
			      size_t nr);
static size_t file_fault_room(struct hetmm_pagemap *pgmap, uint64_t index);
static void punch_cancel(struct hetmm_file *f, uint64_t index, size_t nr);
static size_t attach_absent(struct hetmm_file *f, uint64_t index, size_t nr);

/* ------------------------------------------------------------------------
 * Synchronous copies: pread/pwrite
 */

/*
 * A copy of frames [index, index + nr) begins, synchronous or not: false
 * if they are not the device's.  Else a read counts against an attached
 * file's bound, a write takes the frames off the punch list (every byte
 * is rewritten), and *err is the error injected for them, or 0.
 */
static bool copy_begin(struct hetmm_file *f, bool write, uint64_t index,
		       size_t nr, int *err)
{
	if (index + nr > f->nr_pages)
		return false;
	if (!write)
		attach_faulted_in(f, index, nr);
	else
		punch_cancel(f, index, nr);
	*err = fault_for(f, write, index, nr);
	return true;
}

static int file_sync_io(struct hetmm_pagemap *pgmap, bool write, char *buf,
			uint64_t index, size_t nr)
{
	struct hetmm_file *f = file_of(pgmap);
	int err;
	if (!f || !copy_begin(f, write, index, nr, &err))
		return -EINVAL;
	if (!err)
		err = io_whole(f->fd, write, buf, nr * PS, frame_off(f, index));
	count_done(f, write, nr, err);
	return err;
}

static int file_copy_to(struct hetmm_pagemap *pgmap, uint64_t index,
			const void *src, size_t nr)
{
	return file_sync_io(pgmap, true, (char *)src, index, nr);
}

static int file_copy_from(struct hetmm_pagemap *pgmap, void *dst,
			  uint64_t index, size_t nr)
{
	return file_sync_io(pgmap, false, dst, index, nr);
}

/* Frames pending a punch worth one pass. */
#define PUNCH_BATCH 512

/* Punch every pending run; under punch_lock, so that no write of a
 * frame in it is submitted until its punch is done. */
static void punch_flush_locked(struct hetmm_file *f)
{
	uint64_t i = 0;
	while (f->punch_pending && i < f->nr_pages) {
		if (!(f->punch_bits[i / 64] >> (i % 64) & 1)) {
			i++;
			continue;
		}
		uint64_t run = 0;
		while (i + run < f->nr_pages &&
		       (f->punch_bits[(i + run) / 64] >> ((i + run) % 64) & 1)) {
			f->punch_bits[(i + run) / 64] &= ~(1ULL << ((i + run) % 64));
			run++;
		}
		f->punch_pending -= run;
		if (f->punch && fallocate(f->fd, FALLOC_FL_PUNCH_HOLE |
					  FALLOC_FL_KEEP_SIZE,
					  frame_off(f, i), (off_t)(run * PS)) == 0)
			atomic_fetch_add(&f->punched, run);
		else if (errno == EOPNOTSUPP)
			f->punch = false;   /* the filesystem can't */
		i += run;
	}
}

/* A freed frame gives its blocks back, in a batch with others. */
static void file_page_free(struct hetmm_pagemap *pgmap, uint64_t index)
{
	struct hetmm_file *f = file_of(pgmap);
	if (!f || !f->punch_bits || index >= f->nr_pages)
		return;
	pthread_mutex_lock(&f->punch_lock);
	if (!(f->punch_bits[index / 64] >> (index % 64) & 1)) {
		f->punch_bits[index / 64] |= 1ULL << (index % 64);
		f->punch_pending++;
	}
	if (f->punch_pending >= PUNCH_BATCH)
		punch_flush_locked(f);
	pthread_mutex_unlock(&f->punch_lock);
}

/* Frames about to be written need no punch (every byte is rewritten),
 * and must not get one after the write. */
static void punch_cancel(struct hetmm_file *f, uint64_t index, size_t nr)
{
	if (!f->punch_bits)
		return;
	pthread_mutex_lock(&f->punch_lock);
	for (uint64_t i = index; i < index + nr && f->punch_pending; i++) {
		if (f->punch_bits[i / 64] >> (i % 64) & 1) {
			f->punch_bits[i / 64] &= ~(1ULL << (i % 64));
			f->punch_pending--;
		}
	}
	pthread_mutex_unlock(&f->punch_lock);
}

static const struct hetmm_pagemap_ops file_pread_ops = {
	.copy_to_device = file_copy_to,
	.copy_from_device = file_copy_from,
	.page_free = file_page_free,
	.fault_room = file_fault_room,
};

/* ------------------------------------------------------------------------
 * Asynchronous copies: io_uring
 */
#ifdef HETMM_HAVE_LIBURING

/* user_data of the request that stops the completion thread, of the
 * one that has it look at the jobs (ahead_job), and of a request taken
 * back (uring_submit), whose completion it ignores. */
#define REAPER_STOP 1
#define AHEAD_KICK 2
#define URING_VOID 3

/*
 * Read-ahead.  A sequential scan of an attached file faults window after
 * window, and between two windows the disk has nothing to do: the
 * handler installs the window, the scanning thread runs through it and
 * faults again, and under a resident bound the evictor sends pages back
 * before a fault held for room may go on (docs/PERFORMANCE.md,
 * "Storage": the disk was busy 15% of a bounded scan, and never while
 * the scan ran).  So a read that goes on from where the last one ended
 * reads the next AHEAD_SEGS segments past it into the device's own
 * buffers, and a read they hold is a memcpy.  8 MiB of them, not 2: a
 * fault held for room waits for the evictor, whose calls wait for the
 * handler, and 2 MiB were read before that wait was over, the disk idle
 * for the rest of it (64 MiB under a 50% bound: 2 MiB ahead 1.42 GB/s,
 * 8 MiB 1.59-1.63, docs/PERFORMANCE.md "Storage"); 8 MiB is also how
 * far the kernel's own read-ahead went on that disk (read_ahead_kb).
 * Only pages not in memory
 * are read ahead, only while no write is in flight, and a write drops
 * what it overlaps: a segment never holds bytes older than the file's.
 * All under sq_lock.
 */

static int uring_submit(struct hetmm_file *f, bool write, char *buf,
			uint64_t index, size_t nr, struct hetmm_copy *copy);

/* The segment reading or holding frame i, or NULL. */
static struct file_seg *ahead_at(struct hetmm_file *f, uint64_t i)
{
	for (unsigned k = 0; k < f->ahead_nr; k++) {
		struct file_seg *s = &f->ahead[k];
		if ((s->state == SEG_READING || s->state == SEG_READY) &&
		    i >= s->first && i < s->first + s->nr)
			return s;
	}
	return NULL;
}

/* Segment s no longer serves: free, or dropped while it reads. */
static void ahead_forget(struct file_seg *s)
{
	if (s->state == SEG_READING)
		s->state = SEG_DROPPED;
	else if (s->state == SEG_READY)
		s->state = SEG_FREE;
}

/* A write of frames [index, index + nr) is submitted: what the segments
 * hold of them is stale. */
static void ahead_written(struct hetmm_file *f, uint64_t index, size_t nr)
{
	f->writes++;
	for (unsigned k = 0; k < f->ahead_nr; k++) {
		struct file_seg *s = &f->ahead[k];
		if (s->first < index + nr && index < s->first + s->nr)
			ahead_forget(s);
	}
}

/* Start reading segment s: whether it went. */
static bool ahead_start(struct hetmm_file *f, struct file_seg *s)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&f->ring);
	if (!sqe)
		return false;
	s->req = (struct file_req){ .seg = s, .buf = s->buf,
				    .off = (uint64_t)frame_off(f, s->first),
				    .len = s->nr * PS };
	if (f->ahead_fixed >= 0)
		io_uring_prep_read_fixed(sqe, 0, s->buf, (unsigned)s->req.len,
					 s->req.off, f->ahead_fixed);
	else
		io_uring_prep_read(sqe, 0, s->buf, (unsigned)s->req.len,
				   s->req.off);
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data(sqe, &s->req);
	s->state = SEG_READING;
	s->err = 0;
	f->ahead_reading++;
	return true;
}

/* Does a job still want what segment s holds? */
static bool ahead_needed(struct hetmm_file *f, const struct file_seg *s)
{
	for (struct file_req *r = f->jobs; r; r = r->next_free)
		if (r->index + r->got < s->first + s->nr &&
		    s->first < r->index + r->nr)
			return true;
	return false;
}

/*
 * A read of frames [index, next) was just started or served: if it went
 * on from where the last ended, read ahead of next until AHEAD_SEGS
 * segments' worth are, stopping at a page in memory.  Segments behind
 * next, or beyond that reach (another stream's), are forgotten.  The
 * reads are the caller's to submit.
 */
static void ahead_fill(struct hetmm_file *f, uint64_t index, uint64_t next)
{
	bool on = index == f->ahead_next;
	uint64_t reach = next + f->ahead_nr * AHEAD_SEG, end = next;
	f->ahead_next = next;
	for (unsigned k = 0; k < f->ahead_nr; k++) {
		struct file_seg *s = &f->ahead[k];
		if (s->state != SEG_READING && s->state != SEG_READY)
			continue;
		if ((!on || s->first + s->nr <= next || s->first >= reach) &&
		    !ahead_needed(f, s))
			ahead_forget(s);
		else if (s->first + s->nr > end)
			end = s->first + s->nr;
	}
	if (!on || f->writes)
		return;
	reach = reach < f->nr_pages ? reach : f->nr_pages;
	for (unsigned k = 0; k < f->ahead_nr && end < reach; k++) {
		struct file_seg *s = &f->ahead[k];
		if (s->state != SEG_FREE)
			continue;
		uint64_t want = reach - end < AHEAD_SEG ? reach - end : AHEAD_SEG;
		s->first = end;
		s->nr = attach_absent(f, end, (size_t)want);
		if (!s->nr || !ahead_start(f, s))
			break;
		end += s->nr;
	}
}

/* A segment's read completed (on the completion thread), res as the
 * kernel gave it. */
static void ahead_complete(struct hetmm_file *f, struct file_seg *s, int res)
{
	pthread_mutex_lock(&f->sq_lock);
	char *buf = s->buf;
	size_t len = s->nr * PS;
	off_t off = frame_off(f, s->first);
	pthread_mutex_unlock(&f->sq_lock);
	/* A short read (a signal) is finished as a copy's is; only this
	 * thread touches the segment while it reads. */
	int err = res < 0 ? res : 0;
	if (!err && (size_t)res < len)
		err = io_whole(f->fd, false, buf + res, len - (size_t)res,
			       off + res);
	pthread_mutex_lock(&f->sq_lock);
	s->state = s->state == SEG_DROPPED ? SEG_FREE : SEG_READY;
	s->err = err;
	f->ahead_reading--;
	pthread_cond_broadcast(&f->ahead_done);
	pthread_mutex_unlock(&f->sq_lock);
}

/*
 * A read the segments hold, from its first page on, is a job for the
 * completion thread, which copies it out of them (ahead_jobs): the
 * copy is not the fault handler's to make, whose own work (installing
 * the pages) is a scan's bottleneck.  When the segment is read already,
 * a no-op request wakes that thread: the caller submits it, with the
 * next segments to read (one system call, as the read's would be).
 * Whether it took the read.
 */
static bool ahead_job(struct hetmm_file *f, char *dst, uint64_t index,
		      size_t nr, struct hetmm_copy *copy)
{
	struct file_seg *s = ahead_at(f, index);
	struct file_req *r = f->free_reqs;
	if (!s || s->err || !r)
		return false;
	if (s->state == SEG_READY) {
		struct io_uring_sqe *sqe = io_uring_get_sqe(&f->ring);
		if (!sqe)
			return false;
		io_uring_prep_nop(sqe);
		io_uring_sqe_set_data(sqe, (void *)(uintptr_t)AHEAD_KICK);
	}
	f->free_reqs = r->next_free;
	*r = (struct file_req){ .copy = copy, .buf = dst, .index = index,
				.nr = nr };
	*f->jobs_end = r;
	f->jobs_end = &r->next_free;
	return true;
}

/* Copy what the segments hold of job r: whether it is over (all of it
 * copied, or the rest not read ahead, to be read), not waiting for a
 * segment's read.  A segment copied to its end is free. */
static bool ahead_copy(struct hetmm_file *f, struct file_req *r)
{
	while (r->got < r->nr) {
		struct file_seg *s = ahead_at(f, r->index + r->got);
		if (s && s->state == SEG_READING)
			return false;
		if (!s || s->err)
			return true;
		size_t off = r->index + r->got - s->first;
		size_t n = s->nr - off < r->nr - r->got ? s->nr - off
							: r->nr - r->got;
		memcpy(r->buf + r->got * PS, s->buf + off * PS, n * PS);
		r->got += n;
		if (off + n == s->nr)
			s->state = SEG_FREE;
	}
	return true;
}

/* The rest of job r from the file, here: its read could not start. */
static void finish_read(struct hetmm_file *f, const struct file_req *r)
{
	size_t left = r->nr - r->got;
	int err = io_whole(f->fd, false, r->buf + r->got * PS, left * PS,
			   frame_off(f, r->index + r->got));
	count_done(f, false, left, err);
	hetmm_copy_done(r->copy, err);
}

/* The jobs' copies, on the completion thread: the jobs over are done,
 * or the rest of each read from the file. */
static void ahead_jobs(struct hetmm_file *f)
{
	struct file_req over[HETMM_COPY_DEPTH_MAX];   /* the jobs at most */
	size_t n = 0;
	pthread_mutex_lock(&f->sq_lock);
	for (struct file_req **pr = &f->jobs; *pr;) {
		struct file_req *r = *pr;
		if (!ahead_copy(f, r)) {
			pr = &r->next_free;
			continue;
		}
		*pr = r->next_free;
		if (f->jobs_end == &r->next_free)
			f->jobs_end = pr;
		over[n++] = *r;
		r->next_free = f->free_reqs;
		f->free_reqs = r;
	}
	if (n)
		pthread_cond_broadcast(&f->ahead_done);   /* uring_stop */
	pthread_mutex_unlock(&f->sq_lock);
	for (size_t k = 0; k < n; k++) {
		struct file_req *r = &over[k];
		count_done(f, false, r->got, 0);
		if (r->got == r->nr)
			hetmm_copy_done(r->copy, 0);
		else if (uring_submit(f, false, r->buf + r->got * PS,
				      r->index + r->got, r->nr - r->got,
				      r->copy))
			finish_read(f, r);
	}
}

/*
 * A submit failed.  What it had for the kernel is in the ring all the
 * same, to go with the next submit, which may be long in coming: a
 * fault's copy from a segment (ahead_job) would wait for its kick until
 * then, or until hetmm's copy timeout.  So each request not sent is made
 * a no-op the completion thread ignores, and what it started is undone:
 * a copy's request is taken back (its caller says the copy did not
 * start), a segment's read did not begin (a job that wants its pages
 * reads them from the file), a kick is the caller's to give
 * (ahead_jobs, on its own thread).  Under sq_lock, which every submit
 * holds: nothing takes requests from the ring meanwhile.
 */
static void uring_unsend(struct hetmm_file *f)
{
	struct io_uring_sq *sq = &f->ring.sq;
	for (unsigned i = io_uring_smp_load_acquire(sq->khead);
	     i != sq->sqe_tail; i++) {
		struct io_uring_sqe *sqe = &sq->sqes[i & sq->ring_mask];
		uintptr_t data = (uintptr_t)sqe->user_data;
		if (data == REAPER_STOP)
			continue;
		io_uring_prep_nop(sqe);
		io_uring_sqe_set_data(sqe, (void *)(uintptr_t)URING_VOID);
		if (data == URING_VOID || data == AHEAD_KICK)
			continue;
		struct file_req *r = (struct file_req *)data;
		if (r->seg) {
			r->seg->state = SEG_FREE;
			f->ahead_reading--;
			pthread_cond_broadcast(&f->ahead_done);   /* uring_stop */
		} else {
			f->writes -= r->write;
			r->next_free = f->free_reqs;
			f->free_reqs = r;
		}
	}
}

/* Start one read or write: 0, or a negative errno (nothing started). */
static int uring_submit(struct hetmm_file *f, bool write, char *buf,
			uint64_t index, size_t nr, struct hetmm_copy *copy)
{
	int err;
	if (!copy_begin(f, write, index, nr, &err))
		return -EINVAL;
	if (err) {
		count_done(f, write, nr, err);
		hetmm_copy_done(copy, err);
		return 0;
	}
	pthread_mutex_lock(&f->sq_lock);
	struct file_req *r = f->free_reqs;
	struct io_uring_sqe *sqe = r ? io_uring_get_sqe(&f->ring) : NULL;
	if (!sqe) {
		pthread_mutex_unlock(&f->sq_lock);
		return -EBUSY;   /* more in flight than the queue depth */
	}
	f->free_reqs = r->next_free;
	*r = (struct file_req){ .copy = copy, .buf = buf,
				.off = (uint64_t)frame_off(f, index),
				.len = nr * PS, .write = write };
	if (write)
		ahead_written(f, index, nr);
	bool fixed = !write && f->staging && buf >= f->staging &&
		     buf + r->len <= f->staging + f->staging_len;
	if (write)
		io_uring_prep_write(sqe, 0, buf, (unsigned)r->len, r->off);
	else if (fixed)
		io_uring_prep_read_fixed(sqe, 0, buf, (unsigned)r->len,
					 r->off, 0);
	else
		io_uring_prep_read(sqe, 0, buf, (unsigned)r->len, r->off);
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data(sqe, r);
	int rc = io_uring_submit(&f->ring);
	if (rc < 0)
		uring_unsend(f);   /* r among them: taken back */
	pthread_mutex_unlock(&f->sq_lock);
	return rc < 0 ? rc : 0;
}

static int uring_submit_to(struct hetmm_pagemap *pgmap, uint64_t index,
			   const void *src, size_t nr, struct hetmm_copy *copy)
{
	struct hetmm_file *f = file_of(pgmap);
	return f ? uring_submit(f, true, (char *)src, index, nr, copy)
		 : -EINVAL;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Read the page at frame index into buf on the lone ring and wait for
 * it: true with *err 0 or a negative errno; false if the ring is busy
 * (another thread reads on it) or out of use, for the caller to read
 * the page otherwise.
 *
 * The reader sleeps until the read is done; it does not poll.  A thread
 * waits in its fault for this page, and where it and the reader (the
 * handler) share a CPU both wake-ups of the fault are local; apart, each
 * is a cross-CPU one, about 25 us on a VM whose idle vCPUs halt.  The
 * scheduler keeps a reader that sleeps through its reads on the faulting
 * thread's CPU, and moves one that polls for them (busy for the read's
 * time each fault) to the other: 2 x 2000 random faults of a 64 MiB
 * file on an idle machine, median 68-71 us sleeping against 118-121
 * polling for up to twice the average read (docs/PERFORMANCE.md,
 * "Storage").
 */
static bool lone_read(struct hetmm_file *f, char *buf, uint64_t index,
		      int *err)
{
	if (pthread_mutex_trylock(&f->lone_lock))
		return false;
	if (!f->lone_up) {
		pthread_mutex_unlock(&f->lone_lock);
		return false;
	}
	struct io_uring_sqe *sqe = io_uring_get_sqe(&f->lone);
	off_t off = frame_off(f, index);
	io_uring_prep_read(sqe, 0, buf, (unsigned)PS, (uint64_t)off);
	sqe->flags |= IOSQE_FIXED_FILE;
	struct io_uring_cqe *cqe;
	int rc = io_uring_submit(&f->lone) == 1 ? -EAGAIN : -EIO;
	while (rc == -EAGAIN || rc == -EINTR)
		rc = io_uring_wait_cqe(&f->lone, &cqe);
	int res = 0;
	if (rc == 0) {
		res = cqe->res;
		io_uring_cqe_seen(&f->lone, cqe);
	} else {
		/* Not started, or its completion not to be had: a request
		 * may be left on the ring, which serves no more. */
		f->lone_up = false;
	}
	pthread_mutex_unlock(&f->lone_lock);
	if (rc)
		return false;
	/* A short read (a signal) is finished as the reaper does. */
	*err = res < 0 ? res
	       : io_whole(f->fd, false, buf + res, PS - (size_t)res, off + res);
	return true;
}

/*
 * A lone page, a random fault's, is read here, by the thread that waits
 * for it (lone_read, or pread): in flight it would cost a wake-up of the
 * completion thread and another of the waiting one, each as dear as the
 * read on a loaded machine (docs/PERFORMANCE.md, "Storage").  Larger
 * reads go in flight.
 */
static int uring_read(struct hetmm_file *f, char *dst, uint64_t index,
		      size_t nr, struct hetmm_copy *copy)
{
	if (nr == 1) {
		int err;
		if (!copy_begin(f, false, index, 1, &err))
			return -EINVAL;
		if (!err && !lone_read(f, dst, index, &err))
			err = io_whole(f->fd, false, dst, PS,
				       frame_off(f, index));
		count_done(f, false, 1, err);
		hetmm_copy_done(copy, err);
		return 0;
	}
	return uring_submit(f, false, dst, index, nr, copy);
}

/* A read, from what was read ahead (an attached file's: ahead_job) or
 * from the file; then more read ahead. */
static int uring_submit_from(struct hetmm_pagemap *pgmap, void *dst,
			     uint64_t index, size_t nr,
			     struct hetmm_copy *copy)
{
	struct hetmm_file *f = file_of(pgmap);
	if (!f)
		return -EINVAL;
	if (!f->ahead_buf)
		return uring_read(f, dst, index, nr, copy);
	int rc = 0;
	bool taken = false;
	if (!fault_for(f, false, index, nr)) {
		attach_faulted_in(f, index, nr);
		pthread_mutex_lock(&f->sq_lock);
		taken = ahead_job(f, dst, index, nr, copy);
		pthread_mutex_unlock(&f->sq_lock);
	}
	if (!taken)
		rc = uring_read(f, dst, index, nr, copy);   /* read first */
	pthread_mutex_lock(&f->sq_lock);
	ahead_fill(f, index, index + nr);
	bool refused = io_uring_submit(&f->ring) < 0;
	if (refused)
		uring_unsend(f);
	pthread_mutex_unlock(&f->sq_lock);
	if (refused)
		ahead_jobs(f);   /* the kick's work, and reads not begun */
	return rc;
}

/* A completion: finish a short transfer, then tell hetmm.  The request
 * is read under the lock it was written under: the kernel orders the
 * two, which a race detector can't see. */
static void uring_complete(struct hetmm_file *f, struct file_req *req,
			   int res)
{
	pthread_mutex_lock(&f->sq_lock);
	struct file_req r = *req;
	if (!r.seg) {
		req->next_free = f->free_reqs;
		f->free_reqs = req;
	}
	pthread_mutex_unlock(&f->sq_lock);
	if (r.seg) {
		ahead_complete(f, r.seg, res);
		ahead_jobs(f);
		return;
	}
	int err = res < 0 ? res : 0;
	if (!err && (size_t)res < r.len)
		err = io_whole(f->fd, r.write, r.buf + res,
			       r.len - (size_t)res, (off_t)(r.off + res));
	if (r.write) {
		/* Read-ahead may go on: the file has the bytes. */
		pthread_mutex_lock(&f->sq_lock);
		f->writes--;
		pthread_mutex_unlock(&f->sq_lock);
	}
	count_done(f, r.write, r.len / PS, err);
	hetmm_copy_done(r.copy, err);
}

static void *uring_reaper(void *arg)
{
	struct hetmm_file *f = arg;
	for (;;) {
		struct io_uring_cqe *cqe;
		int rc = io_uring_wait_cqe(&f->ring, &cqe);
		if (rc == -EINTR || rc == -EAGAIN)
			continue;
		if (rc < 0)
			break;   /* the ring is broken: nothing more comes */
		void *data = io_uring_cqe_get_data(cqe);
		int res = cqe->res;
		io_uring_cqe_seen(&f->ring, cqe);
		if ((uintptr_t)data == REAPER_STOP)
			break;
		if ((uintptr_t)data == AHEAD_KICK)
			ahead_jobs(f);
		else if ((uintptr_t)data != URING_VOID)
			uring_complete(f, data, res);
	}
	return NULL;
}

static const struct hetmm_pagemap_ops file_uring_ops = {
	.submit_to_device = uring_submit_to,
	.submit_from_device = uring_submit_from,
	.page_free = file_page_free,
	.fault_room = file_fault_room,
};

/* io_uring asked not to be used: the flag, or HETMM_FILE_IO=pread. */
static bool uring_declined(uint32_t flags)
{
	const char *env = getenv("HETMM_FILE_IO");
	return (flags & HETMM_FILE_PREAD) || (env && !strcmp(env, "pread"));
}

/*
 * The lone ring.  The kernel posts a read's completion by task work on
 * the thread that submitted it, and by default interrupts that thread
 * for it at once if it runs: an IPI when the disk's interrupt came to
 * another CPU, about 15 us on this VM.  With IORING_SETUP_COOP_TASKRUN
 * (Linux 5.19) it sends none and, with IORING_SETUP_TASKRUN_FLAG, flags
 * the ring, which liburing looks at; a reader asleep in
 * io_uring_wait_cqe (lone_read) is woken either way.  An older kernel
 * refuses the flags: the ring is made without them.
 */
static int lone_open(struct io_uring *ring)
{
	if (io_uring_queue_init(2, ring, IORING_SETUP_COOP_TASKRUN |
				IORING_SETUP_TASKRUN_FLAG) == 0)
		return 0;
	return io_uring_queue_init(2, ring, 0);
}

/* A ring of depth entries with the file registered, or the errno. */
static int uring_open(struct hetmm_file *f, uint32_t depth)
{
	int rc = io_uring_queue_init(depth + AHEAD_SEGS, &f->ring, 0);
	if (rc < 0)
		return rc;
	f->ring_up = true;
	rc = io_uring_register_files(&f->ring, &f->fd, 1);
	if (rc < 0)
		return rc;
	if (lone_open(&f->lone) == 0) {
		f->lone_up = io_uring_register_files(&f->lone, &f->fd, 1) == 0;
		if (!f->lone_up)
			io_uring_queue_exit(&f->lone);
	}
	f->reqs = calloc(depth, sizeof(*f->reqs));
	if (!f->reqs)
		return -ENOMEM;
	for (uint32_t i = 0; i < depth; i++) {
		f->reqs[i].next_free = f->free_reqs;
		f->free_reqs = &f->reqs[i];
	}
	return 0;
}

/* The buffers an attached file reads ahead into (ahead_fill); none if
 * they can't be had. */
static void ahead_init(struct hetmm_file *f)
{
	uint64_t segs = (f->nr_pages + AHEAD_SEG - 1) / AHEAD_SEG;
	unsigned nr = segs < AHEAD_SEGS ? (unsigned)segs : AHEAD_SEGS;
	char *p = mmap(NULL, nr * AHEAD_SEG * PS, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return;
	f->ahead_buf = p;
	f->ahead_nr = nr;
	for (unsigned k = 0; k < nr; k++)
		f->ahead[k].buf = p + (size_t)k * AHEAD_SEG * PS;
}

/* Register the pagemap's staging as fixed buffer 0, and an attached
 * file's read-ahead buffers after it, and start the completion thread.
 * Registered buffers are locked memory: refused both (RLIMIT_MEMLOCK),
 * the staging alone is tried; refused that, reads go unregistered. */
static int uring_start(struct hetmm_file *f, bool attach)
{
	struct hetmm_pagemap_info pi;
	int rc = hetmm_pagemap_get_info(f->pgmap, &pi);
	if (rc)
		return rc;
	if (attach)
		ahead_init(f);
	struct iovec iov[2];
	unsigned n = 0;
	int ahead = -1;
	if (pi.copy_staging)
		iov[n++] = (struct iovec){ pi.copy_staging,
					   pi.copy_staging_len };
	if (f->ahead_buf) {
		ahead = (int)n;
		iov[n++] = (struct iovec){ f->ahead_buf,
					   f->ahead_nr * AHEAD_SEG * PS };
	}
	int reg = n ? io_uring_register_buffers(&f->ring, iov, n) : -1;
	if (reg && n == 2) {
		ahead = -1;   /* the staging alone */
		reg = io_uring_register_buffers(&f->ring, iov, 1);
	}
	if (reg == 0) {
		if (pi.copy_staging) {
			f->staging = pi.copy_staging;
			f->staging_len = pi.copy_staging_len;
			f->info.fixed_buffers = 1;
		}
		f->ahead_fixed = ahead;
	}
	rc = hetmm_thread_create(&f->reaper, uring_reaper, f);
	if (rc)
		return rc;
	f->reaper_up = true;
	return 0;
}

/*
 * Send the reaper's stop, under sq_lock.  Nothing else will follow it
 * to carry it along: refused for want of memory (-EAGAIN) or of room
 * for completions (-EBUSY, which the reaper frees without sq_lock), or
 * interrupted, it is sent again, until it goes.  Any other error means
 * a broken ring, which the reaper's wait fails on too, and it returns.
 */
static void submit_stop(struct hetmm_file *f)
{
	int rc;
	while ((rc = io_uring_submit(&f->ring)) == -EAGAIN || rc == -EBUSY ||
	       rc == -EINTR) {
		pthread_mutex_unlock(&f->sq_lock);
		usleep(1000);
		pthread_mutex_lock(&f->sq_lock);
	}
}

/* Stop the completion thread: a no-op request it reads last. */
static void uring_stop(struct hetmm_file *f)
{
	if (f->reaper_up) {
		pthread_mutex_lock(&f->sq_lock);
		/* Reads into buffers freed below, copies out of them. */
		while (f->ahead_reading || f->jobs)
			pthread_cond_wait(&f->ahead_done, &f->sq_lock);
		struct io_uring_sqe *sqe;
		while (!(sqe = io_uring_get_sqe(&f->ring)))
			io_uring_submit(&f->ring);
		io_uring_prep_nop(sqe);
		io_uring_sqe_set_data(sqe, (void *)(uintptr_t)REAPER_STOP);
		submit_stop(f);
		pthread_mutex_unlock(&f->sq_lock);
		pthread_join(f->reaper, NULL);
		f->reaper_up = false;
	}
	if (f->ring_up)
		io_uring_queue_exit(&f->ring);
	f->ring_up = false;
	if (f->lone_up)
		io_uring_queue_exit(&f->lone);
	f->lone_up = false;
	free(f->reqs);
	f->reqs = NULL;
	if (f->ahead_buf)
		munmap(f->ahead_buf, f->ahead_nr * AHEAD_SEG * PS);
	f->ahead_buf = NULL;
	f->ahead_nr = 0;
}

/* The ops to hot-add with: io_uring's unless refused or declined. */
static void file_io_init(struct hetmm_file *f)
{
	pthread_mutex_init(&f->sq_lock, NULL);
	pthread_mutex_init(&f->lone_lock, NULL);
	pthread_cond_init(&f->ahead_done, NULL);
	f->ahead_fixed = -1;
	f->jobs_end = &f->jobs;
}

static const struct hetmm_pagemap_ops *file_choose_io(struct hetmm_file *f,
		uint32_t flags, uint32_t depth)
{
	if (uring_declined(flags))
		return &file_pread_ops;
	int rc = uring_open(f, depth);
	if (rc == 0) {
		f->info.io = HETMM_FILE_IO_URING;
		return &file_uring_ops;
	}
	f->info.uring_errno = rc;
	uring_stop(f);
	return &file_pread_ops;
}

static void file_io_free(struct hetmm_file *f)
{
	uring_stop(f);
	pthread_mutex_destroy(&f->sq_lock);
	pthread_mutex_destroy(&f->lone_lock);
	pthread_cond_destroy(&f->ahead_done);
}

#else /* !HETMM_HAVE_LIBURING */

static void file_io_init(struct hetmm_file *f)
{
	(void)f;
}

static const struct hetmm_pagemap_ops *file_choose_io(struct hetmm_file *f,
		uint32_t flags, uint32_t depth)
{
	(void)depth;
	if (!(flags & HETMM_FILE_PREAD))
		f->info.uring_errno = -ENOSYS;   /* built without liburing */
	return &file_pread_ops;
}

static int uring_start(struct hetmm_file *f, bool attach)
{
	(void)f;
	(void)attach;
	return 0;
}

static void file_io_free(struct hetmm_file *f)
{
	(void)f;
}

#endif /* HETMM_HAVE_LIBURING */

/* ------------------------------------------------------------------------
 * An attached file (hetmm_file_attach): the range, its resident bound and
 * its sync.
 *
 * Page i of the range is frame i, the file's block for it.  The bound
 * counts pages the copy ops read in (attach_faulted_in, on the handler
 * thread) and keeps them in order of arrival; the device's own thread
 * (the evictor) sends the oldest back with hetmm_migrate_to_frames(),
 * which writes only the pages written since they came in (hetmm tells
 * them: HETMM_PAGEMAP_PLACED).  The range's notifier hears discards,
 * whose pages the evictor puts back on the file, and unmaps, which end
 * the attachment there.  att->lock is never held across a call into
 * hetmm: the handler takes it in the copy ops and the notifier.
 */

/* Page states, a byte each. */
#define PG_IN 1u        /* in memory, counted by the bound */
#define PG_QUEUED 2u    /* in the arrival queue */
#define PG_GONE 4u      /* unmapped: not ours any more */

/* Discarded ranges waiting to go back on the file; more at once make
 * the whole range wait. */
#define REDO_SLOTS 16
/* A migration chunk (512 pages at any page size), which hetmm zaps with
 * one madvise when a run is the whole chunk. */
#define EVICT_RUN 512
/* Pages one migration call sends back at most: several chunks, so that a
 * drain of several is one call.  Each call syncs with the fault handler
 * (hetmm_migrate_to_frames), and each sync waits for the fault-around
 * window it is reading, when a scan is on: 64 MiB under 16 and 32 MiB
 * bounds, 12-16 and 6-10 calls where one chunk a call took 25 and 18. */
#define EVICT_CALL (4 * EVICT_RUN)

struct page_range {
	uint64_t first, end;
};

struct file_attach {
	char *addr;                     /* the range, nr_pages long */
	uint64_t max_resident;          /* 0: no bound */
	uint64_t low_mark;              /* a drain's end: evict_low_mark() */
	struct hetmm_notifier *watch;   /* the range */
	bool watch_released;            /* the context freed it */
	pthread_mutex_t lock;           /* what follows */
	pthread_cond_t wake;
	uint8_t *state;                 /* PG_* per page */
	uint64_t nr_in;
	uint32_t *queue;                /* arrival order, a ring */
	uint64_t q_head, q_len;
	struct page_range redo[REDO_SLOTS];
	unsigned nr_redo;
	bool redo_all;
	bool stop;
	bool stalled;                   /* the last pass freed nothing */
	bool refused;                   /* a fault held back: room to be
					 * made (file_fault_room) */
	bool draining;                  /* over the bound, not yet down to
					 * low_mark */
	pthread_t evictor;
	bool evictor_up;
	atomic_uint_fast64_t evicted;
	uint8_t status[EVICT_CALL];     /* the evictor's reports */
};

/* How far under the bound a drain goes: an eighth of it, EVICT_LOW_MOST
 * pages at most. */
#define EVICT_LOW_MOST (4 * EVICT_RUN)

static uint64_t evict_low_mark(uint64_t max_resident)
{
	uint64_t slack = max_resident / 8;
	return max_resident - (slack < EVICT_LOW_MOST ? slack : EVICT_LOW_MOST);
}

/*
 * Pages to send back now (under a->lock: it moves the drain's state).
 * Once the range is over its bound it drains to the low mark, not to
 * the bound: pages go back in whole chunks, not a few after each fault.
 * Each migration call zaps its runs, and each zap raises a userfaultfd
 * event during which the kernel refuses the fault handler's installs
 * (EAGAIN) until the handler has read it and the zapping thread has run
 * again: a fault-around window in flight waits (docs/PERFORMANCE.md,
 * "Storage").  Fewer, whole-chunk calls raise fewer such events.
 */
static uint64_t attach_over(struct file_attach *a)
{
	if (!a->max_resident)
		return 0;
	if (a->nr_in > a->max_resident)
		a->draining = true;
	if (a->draining && a->nr_in <= a->low_mark)
		a->draining = false;
	return a->draining ? a->nr_in - a->low_mark : 0;
}

/*
 * How far past the bound a fault's window may take the range: an eighth
 * of the bound, as far as a drain goes under it, so that a window that
 * reaches the bound is not cut to a few pages; a migration chunk at
 * most (the evictor's unit, and a THP's worth); a page at least.
 */
static uint64_t attach_slack(uint64_t max_resident)
{
	uint64_t slack = max_resident / 8;
	return slack < 1 ? 1 : slack < EVICT_RUN ? slack : EVICT_RUN;
}

/*
 * The bound kept during a scan, not only behind it: a fault once the
 * range holds max_resident pages is held back (0) until the evictor has
 * sent some back (attach_room_made), and one under it brings back no
 * more than the slack past the bound (its fault-around cut short).
 * The kernel's fault reclaims past a memory cgroup's limit the same way
 * before it maps its page.  An evictor stalled (pages held, writes
 * failing) holds nothing back: it tries again after the next fault,
 * which waiting for it would never come.
 */
static size_t file_fault_room(struct hetmm_pagemap *pgmap, uint64_t index)
{
	(void)index;
	struct hetmm_file *f = file_of(pgmap);
	struct file_attach *a = f ? f->att : NULL;
	if (!a || !a->max_resident)
		return SIZE_MAX;
	pthread_mutex_lock(&a->lock);
	uint64_t top = a->max_resident + attach_slack(a->max_resident);
	size_t room = a->stalled ? 1
		      : a->nr_in <= a->max_resident ? top - a->nr_in : 0;
	a->refused |= !room;
	pthread_mutex_unlock(&a->lock);
	return room;
}

/* Tell hetmm a fault held back may come now (under a->lock, which it
 * drops for the call). */
static void attach_room_made(struct hetmm_file *f)
{
	struct file_attach *a = f->att;
	if (!a->refused || (a->nr_in > a->max_resident && !a->stalled))
		return;
	a->refused = false;
	pthread_mutex_unlock(&a->lock);
	hetmm_pagemap_room_made(f->pgmap);
	pthread_mutex_lock(&a->lock);
}

static bool evictor_has_work(struct file_attach *a)
{
	return a->stop || a->nr_redo || a->redo_all ||
	       (attach_over(a) && !a->stalled);
}

static void attach_faulted_in(struct hetmm_file *f, uint64_t index,
			      size_t nr)
{
	struct file_attach *a = f->att;
	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	for (size_t i = index; i < index + nr; i++) {
		if (a->state[i] & (PG_IN | PG_GONE))
			continue;
		a->state[i] |= PG_IN;
		a->nr_in++;
		if (!(a->state[i] & PG_QUEUED)) {
			a->state[i] |= PG_QUEUED;
			a->queue[(a->q_head + a->q_len++) % f->nr_pages] =
				(uint32_t)i;
		}
	}
	a->stalled = false;
	if (evictor_has_work(a))
		pthread_cond_signal(&a->wake);
	pthread_mutex_unlock(&a->lock);
}

/* How many of the nr pages from index on are not in memory, up to the
 * first that is: what may be read ahead (all of them, unattached). */
static size_t attach_absent(struct hetmm_file *f, uint64_t index, size_t nr)
{
	struct file_attach *a = f->att;
	if (!a)
		return nr;
	size_t n = 0;
	pthread_mutex_lock(&a->lock);
	while (n < nr && !(a->state[index + n] & PG_IN))
		n++;
	pthread_mutex_unlock(&a->lock);
	return n;
}

/* Pages [first, end) left memory (a discard, an unmap); gone: for good. */
static void attach_drop(struct file_attach *a, uint64_t first, uint64_t end,
			bool gone)
{
	for (uint64_t i = first; i < end; i++) {
		if (a->state[i] & PG_IN)
			a->nr_in--;
		a->state[i] &= (uint8_t)~PG_IN;
		if (gone)
			a->state[i] |= PG_GONE;
	}
}

static void attach_event(struct hetmm_notifier *n, uintptr_t start,
			 uintptr_t end, enum hetmm_event why, void *arg)
{
	(void)n;
	struct hetmm_file *f = arg;
	struct file_attach *a = f->att;
	if (why == HETMM_EVENT_RELEASE) {
		a->watch_released = true;
		return;
	}
	if (why != HETMM_EVENT_DISCARD && why != HETMM_EVENT_UNMAP &&
	    why != HETMM_EVENT_REMAP)
		return;
	uintptr_t base = (uintptr_t)a->addr, top = base + f->nr_pages * PS;
	start = start > base ? start : base;
	end = end < top ? end : top;
	if (start >= end)
		return;
	uint64_t first = (start - base) / PS, last = (end - base + PS - 1) / PS;
	pthread_mutex_lock(&a->lock);
	/* mremap moves the pages out of the range: gone as well. */
	attach_drop(a, first, last, why != HETMM_EVENT_DISCARD);
	if (why == HETMM_EVENT_DISCARD) {
		if (a->nr_redo < REDO_SLOTS) {
			a->redo[a->nr_redo].first = first;
			a->redo[a->nr_redo++].end = last;
		} else {
			a->redo_all = true;
		}
		pthread_cond_signal(&a->wake);
	}
	pthread_mutex_unlock(&a->lock);
}

static const struct hetmm_notifier_ops attach_ops = {
	.invalidate = attach_event,
};

/*
 * Send [first, end) back to the file, skipping pages unmapped since,
 * with hetmm_migrate_to_frames (holes: the file's bytes again), in runs
 * of at most EVICT_CALL.  status, if given, gets each page's outcome.
 * Returns 0 or the first error other than "nothing to move" (-ENOENT).
 */
static int attach_put_back(struct hetmm_file *f, uint64_t first,
			   uint64_t end, uint8_t *status)
{
	struct file_attach *a = f->att;
	int rc = 0;
	for (uint64_t i = first; i < end;) {
		pthread_mutex_lock(&a->lock);
		for (; i < end && (a->state[i] & PG_GONE); i++)
			if (status)
				status[i - first] = 0;
		uint64_t run = 0;
		while (i + run < end && run < EVICT_CALL &&
		       !(a->state[i + run] & PG_GONE))
			run++;
		pthread_mutex_unlock(&a->lock);
		if (!run)
			break;
		struct hetmm_migrate_report rep = {
			.status = status ? status + (i - first) : NULL,
		};
		int r = hetmm_migrate_to_frames(f->pgmap, a->addr + i * PS,
						run * PS, i,
						HETMM_MIGRATE_POPULATED, &rep);
		if (r && r != -ENOENT && !rc)
			rc = r;
		i += run;
	}
	return rc;
}

/* Pages [first, first + n) were reported by status: those on the file
 * now leave the bound's count; the others, if queued for eviction, go
 * back in the queue.  Returns how many went. */
static uint64_t attach_settle(struct hetmm_file *f, uint64_t first,
			      uint64_t n, const uint8_t *status, bool requeue)
{
	struct file_attach *a = f->att;
	uint64_t went = 0;
	for (uint64_t k = 0; k < n; k++) {
		uint64_t i = first + k;
		bool on_file = status[k] == HETMM_MIGRATE_MOVED ||
			       status[k] == HETMM_MIGRATE_ALREADY;
		if (on_file && (a->state[i] & PG_IN)) {
			a->state[i] &= (uint8_t)~PG_IN;
			a->nr_in--;
			went += status[k] == HETMM_MIGRATE_MOVED;
		} else if (!on_file && requeue && (a->state[i] & PG_IN) &&
			   !(a->state[i] & PG_QUEUED)) {
			a->state[i] |= PG_QUEUED;
			a->queue[(a->q_head + a->q_len++) % f->nr_pages] =
				(uint32_t)i;
		}
	}
	return went;
}

/* The discarded ranges, back on the file. */
static void evictor_redo(struct hetmm_file *f)
{
	struct file_attach *a = f->att;
	struct page_range redo[REDO_SLOTS];
	unsigned n = a->nr_redo;
	bool all = a->redo_all;
	memcpy(redo, a->redo, sizeof(redo));
	a->nr_redo = 0;
	a->redo_all = false;
	pthread_mutex_unlock(&a->lock);
	if (all)
		attach_put_back(f, 0, f->nr_pages, NULL);
	for (unsigned k = 0; !all && k < n; k++)
		attach_put_back(f, redo[k].first, redo[k].end, NULL);
	pthread_mutex_lock(&a->lock);
}

/* Pages from page i of the range to the end of its migration chunk
 * (chunks are aligned in the address space).  A chunk sent back in two
 * runs is zapped twice, and each zap raises a userfaultfd event. */
static uint64_t chunk_left(const struct file_attach *a, uint64_t i)
{
	return EVICT_RUN - ((uintptr_t)a->addr / PS + i) % EVICT_RUN;
}

/*
 * May a run of the drain go on past what the drain needs, to its chunk's
 * end?  While more than half the bound stays.  A drain cut anywhere
 * leaves the next one starting in the middle of a chunk, and each chunk
 * sent back in two runs is two zaps, each an event during which the
 * handler may install nothing (attach_over), where one whole chunk is
 * one zap, or none: a whole THP leaves by a move, which raises no event.
 */
static bool evict_may_round(const struct file_attach *a, uint64_t run)
{
	return run && a->nr_in - run > a->max_resident / 2;
}

/* The oldest queued pages still in memory, a run of consecutive ones,
 * EVICT_CALL at most, that goes on past what the drain needs to the end
 * of its migration chunk (evict_may_round) and no further: its first
 * page, its length (0: none). */
static uint64_t evictor_pick(struct hetmm_file *f, uint64_t *first)
{
	struct file_attach *a = f->att;
	uint64_t run = 0;
	while (a->q_len && run < EVICT_CALL &&
	       (run < attach_over(a) || evict_may_round(a, run))) {
		if (run && run >= attach_over(a) &&
		    chunk_left(a, *first + run) == EVICT_RUN)
			break;   /* rounded up to a chunk's end */
		uint32_t i = a->queue[a->q_head];
		if (!(a->state[i] & PG_IN) || (a->state[i] & PG_GONE)) {
			a->state[i] &= (uint8_t)~PG_QUEUED;
			a->q_head = (a->q_head + 1) % f->nr_pages;
			a->q_len--;
			continue;
		}
		if (run && i != *first + run)
			break;
		if (!run)
			*first = i;
		a->state[i] &= (uint8_t)~PG_QUEUED;
		a->q_head = (a->q_head + 1) % f->nr_pages;
		a->q_len--;
		run++;
	}
	return run;
}

/* One eviction pass: true if it freed anything. */
static bool evictor_pass(struct hetmm_file *f)
{
	struct file_attach *a = f->att;
	uint64_t first = 0, run = evictor_pick(f, &first);
	if (!run)
		return false;
	pthread_mutex_unlock(&a->lock);
	memset(a->status, 0, run);
	attach_put_back(f, first, first + run, a->status);
	pthread_mutex_lock(&a->lock);
	uint64_t went = attach_settle(f, first, run, a->status, true);
	atomic_fetch_add(&a->evicted, went);
	return went != 0;
}

static void *evictor_main(void *arg)
{
	struct hetmm_file *f = arg;
	struct file_attach *a = f->att;
	pthread_mutex_lock(&a->lock);
	for (;;) {
		while (!evictor_has_work(a))
			pthread_cond_wait(&a->wake, &a->lock);
		if (a->stop)
			break;
		if (a->nr_redo || a->redo_all)
			evictor_redo(f);
		/* A pass that frees nothing (write errors, pages held)
		 * waits for the next fault before trying again. */
		while (attach_over(a) && !a->stop && !a->stalled) {
			a->stalled = !evictor_pass(f);
			attach_room_made(f);
		}
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
}

static void attach_free(struct hetmm_file *f)
{
	struct file_attach *a = f->att;
	if (!a)
		return;
	if (a->evictor_up) {
		pthread_mutex_lock(&a->lock);
		a->stop = true;
		pthread_cond_signal(&a->wake);
		pthread_mutex_unlock(&a->lock);
		pthread_join(a->evictor, NULL);
	}
	if (a->watch && !a->watch_released)
		hetmm_notifier_remove(a->watch);
	if (a->addr)
		munmap(a->addr, f->nr_pages * PS);
	pthread_mutex_destroy(&a->lock);
	pthread_cond_destroy(&a->wake);
	free(a->state);
	free(a->queue);
	free(a);
	f->att = NULL;
}

/*
 * The attached range: aligned to a PMD and advised MADV_HUGEPAGE, so that
 * a sequential scan's pages come back in whole huge pages (hetmm brings
 * a block back as one THP where the mapping may have them, which THP's
 * "madvise" mode asks to be said), one first touch per PMD instead of
 * one per page.  NULL if it can't be mapped.
 */
static void *map_huge_aligned(size_t len)
{
	size_t pmd = hetmm_pmd_size();
	char *r = mmap(NULL, len + pmd, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r == MAP_FAILED)
		return NULL;
	char *p = (char *)(((uintptr_t)r + pmd - 1) & ~(uintptr_t)(pmd - 1));
	if (p > r)
		munmap(r, (size_t)(p - r));
	munmap(p + len, (size_t)(r + pmd - p));
	madvise(p, len, MADV_HUGEPAGE);
	return p;
}

/* The range, its pages on their blocks, its notifier, its evictor. */
static int attach_start(struct hetmm_file *f, uint64_t max_resident)
{
	struct file_attach *a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	f->att = a;
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->wake, NULL);
	a->max_resident = max_resident;
	a->low_mark = evict_low_mark(max_resident);
	a->state = calloc(f->nr_pages, 1);
	a->queue = malloc(f->nr_pages * sizeof(*a->queue));
	if (!a->state || !a->queue)
		return -ENOMEM;
	void *p = map_huge_aligned(f->nr_pages * PS);
	if (!p)
		return -ENOMEM;
	a->addr = p;
	int rc = hetmm_notifier_insert(f->ctx, p, f->nr_pages * PS,
				       &attach_ops, f, &a->watch);
	if (rc)
		return rc;
	rc = hetmm_migrate_to_frames(f->pgmap, p, f->nr_pages * PS, 0,
				     HETMM_MIGRATE_POPULATED, NULL);
	if (rc)
		return rc;
	rc = hetmm_thread_create(&a->evictor, evictor_main, f);
	if (rc)
		return rc;
	a->evictor_up = true;
	return 0;
}

/*
 * How long a sync waits out pages other threads hold claimed: this
 * attachment's evictor writing them back, a fault-around window still
 * reading them in.  Such holds end once the device's I/O does, which
 * under load can be far longer than a thousand yields (the bound there
 * was before: -EBUSY in test_attach's bound(), while the evictor wrote).
 */
#define SYNC_BUSY_WAIT_NS (10ULL * 1000000000ULL)
#define SYNC_BUSY_YIELDS 100

/* Every page of the range on the file: see hetmm_file_sync(). */
static int attach_sync(struct hetmm_file *f)
{
	struct file_attach *a = f->att;
	uint8_t *status = malloc(f->nr_pages);
	if (!status)
		return -ENOMEM;
	int rc = 0;
	uint64_t t0 = now_ns();
	for (unsigned tries = 0; now_ns() - t0 < SYNC_BUSY_WAIT_NS; tries++) {
		memset(status, 0, f->nr_pages);
		rc = attach_put_back(f, 0, f->nr_pages, status);
		if (rc == -EINVAL) {
			/* A munmap we have not heard of yet: hear it. */
			hetmm_ctx_sync(f->ctx);
			continue;
		}
		if (rc && rc != -EIO)
			break;
		bool again = false, error = false, held = false;
		pthread_mutex_lock(&a->lock);
		attach_settle(f, 0, f->nr_pages, status, false);
		attach_room_made(f);
		for (uint64_t i = 0; i < f->nr_pages; i++) {
			if (a->state[i] & PG_GONE)
				continue;
			again |= status[i] == HETMM_MIGRATE_SKIP_BUSY;
			error |= status[i] == HETMM_MIGRATE_SKIP_ERROR;
			held |= status[i] == HETMM_MIGRATE_SKIP_PINNED;
		}
		pthread_mutex_unlock(&a->lock);
		rc = error ? -EIO : held ? -EBUSY : 0;
		if (!again || error || held)
			break;
		rc = -EBUSY;
		if (tries < SYNC_BUSY_YIELDS)
			sched_yield();
		else
			usleep(1000);
	}
	free(status);
	/* What did reach the file is made durable either way. */
	if (fdatasync(f->fd) && !rc)
		rc = -errno;
	return rc;
}

/* ------------------------------------------------------------------------
 * The device
 */

static int ctx_usable(struct hetmm_ctx *ctx)
{
	enum hetmm_uffd_route route;
	return hetmm_ctx_uffd_info(ctx, &route, NULL);
}

static bool file_listed(struct hetmm_file *f)
{
	return drv_handles_has(&files, &f->handle);
}

static bool file_unlist(struct hetmm_file *f)
{
	return drv_handles_take(&files, &f->handle);
}

static void file_free(struct hetmm_file *f)
{
	attach_free(f);
	if (f->punch_bits) {
		pthread_mutex_lock(&f->punch_lock);
		punch_flush_locked(f);   /* every frame is free by now */
		pthread_mutex_unlock(&f->punch_lock);
	}
	free(f->punch_bits);
	pthread_mutex_destroy(&f->punch_lock);
	file_io_free(f);
	if (f->fd >= 0)
		close(f->fd);
	if (f->quiet)
		munmap(f->quiet, PS);
	free(f);
}

/* The context's release (drv_life_insert). */
static void file_release(struct drv_handle *h)
{
	file_free((struct hetmm_file *)h);   /* handle is first */
}

#define FILE_FLAGS (HETMM_PAGEMAP_EVICT | HETMM_FILE_PREAD | \
		    HETMM_FILE_BUFFERED)

static int file_check_desc(const struct hetmm_file_desc *d)
{
	if (!d || !d->path || d->path[0] != '/' || !d->nr_pages ||
	    d->nr_pages > (1ULL << 32) || (d->flags & ~FILE_FLAGS) ||
	    d->offset % PS || d->queue_depth > HETMM_COPY_DEPTH_MAX)
		return -EINVAL;
	if (d->offset > UINT64_MAX / 2 || d->nr_pages * PS > UINT64_MAX / 2 -
	    d->offset)
		return -EINVAL;
	return 0;
}

/*
 * Open the file, O_DIRECT unless told not to or refused (EINVAL: the
 * filesystem takes no direct I/O), and make it as large as the device.
 */
static int file_open(struct hetmm_file *f, const struct hetmm_file_desc *d)
{
	int flags = O_RDWR | O_CREAT | O_CLOEXEC;
	f->fd = -1;
	if (!(d->flags & HETMM_FILE_BUFFERED)) {
		f->fd = open(d->path, flags | O_DIRECT, 0600);
		if (f->fd >= 0)
			f->info.direct = 1;
		else if (errno == EINVAL)
			f->info.direct_errno = -EINVAL;
		else
			return -errno;
	}
	if (f->fd < 0)
		f->fd = open(d->path, flags, 0600);
	if (f->fd < 0)
		return -errno;
	struct stat st;
	if (fstat(f->fd, &st))
		return -errno;
	uint64_t need = d->offset + d->nr_pages * PS;
	if (S_ISBLK(st.st_mode)) {
		uint64_t size = 0;
		if (ioctl(f->fd, BLKGETSIZE64, &size))
			return -errno;
		return size < need ? -ENOSPC : 0;
	}
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	f->punch = true;
	if ((uint64_t)st.st_size < need && ftruncate(f->fd, (off_t)need))
		return -errno;
	return 0;
}

/* Open the file and pick the ops: 0, or the errno with f to free. */
static int file_setup(struct hetmm_file *f, const struct hetmm_file_desc *d,
		      uint32_t depth, const struct hetmm_pagemap_ops **ops)
{
	int rc = file_open(f, d);
	if (rc)
		return rc;
	*ops = file_choose_io(f, d->flags, depth);
	f->quiet = mmap(NULL, PS, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (f->quiet == MAP_FAILED) {
		f->quiet = NULL;
		return -ENOMEM;
	}
	return 0;
}

/* A device of d; attached (a placed pagemap, its range mapped) or not. */
static int file_make(struct hetmm_ctx *ctx, const struct hetmm_file_desc *d,
		     bool attach, struct hetmm_file **filep)
{
	if (!ctx || !filep)
		return -EINVAL;
	int rc = ctx_usable(ctx);
	if (rc)
		return rc;
	rc = file_check_desc(d);
	if (rc)
		return rc;
	if (attach ? (d->flags & HETMM_PAGEMAP_EVICT) : d->max_resident != 0)
		return -EINVAL;
	struct hetmm_file *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->ctx = ctx;
	f->offset = d->offset;
	f->nr_pages = d->nr_pages;
	f->info.io = HETMM_FILE_IO_PREAD;
	pthread_mutex_init(&f->punch_lock, NULL);
	file_io_init(f);
	uint32_t depth = d->queue_depth ? d->queue_depth
					: HETMM_COPY_DEPTH_DEFAULT;
	const struct hetmm_pagemap_ops *ops = NULL;
	rc = file_setup(f, d, depth, &ops);
	if (rc) {
		file_free(f);
		return rc;
	}
	/* An attached file's blocks are its data: never punched. */
	f->punch &= !attach;
	if (f->punch) {
		f->punch_bits = calloc((f->nr_pages + 63) / 64, 8);
		if (!f->punch_bits) {
			file_free(f);
			return -ENOMEM;
		}
	}
	struct hetmm_pagemap_desc desc = {
		.type = HETMM_MEMORY_DEVICE_PRIVATE,
		.nr_pages = d->nr_pages,
		.ops = ops,
		.drvdata = f,
		.owner = f,
		.flags = HETMM_PAGEMAP_MANAGED |
			 (attach ? HETMM_PAGEMAP_PLACED :
			  d->flags & HETMM_PAGEMAP_EVICT),
		.queue_depth = f->info.io == HETMM_FILE_IO_URING ? depth : 0,
	};
	rc = hetmm_pagemap_add(ctx, &desc, &f->pgmap);
	if (rc) {
		file_free(f);
		return rc;
	}
	if (f->info.io == HETMM_FILE_IO_URING)
		rc = uring_start(f, attach);
	if (!rc)
		rc = drv_life_insert(ctx, f->quiet, &files, &f->handle,
				     file_release, &f->life);
	if (!rc && attach)
		rc = attach_start(f, d->max_resident);
	if (rc) {
		attach_free(f);   /* its pages gone with the range */
		if (f->life)
			hetmm_notifier_remove(f->life);
		hetmm_pagemap_remove_managed(f->pgmap, f);
		file_free(f);
		return rc;
	}
	drv_handles_add(&files, &f->handle);
	*filep = f;
	return 0;
}

int hetmm_file_create(struct hetmm_ctx *ctx, const struct hetmm_file_desc *d,
		      struct hetmm_file **filep)
{
	return file_make(ctx, d, false, filep);
}

int hetmm_file_attach(struct hetmm_ctx *ctx, const struct hetmm_file_desc *d,
		      struct hetmm_file **filep, void **addrp)
{
	if (!addrp)
		return -EINVAL;
	int rc = file_make(ctx, d, true, filep);
	if (!rc)
		*addrp = (*filep)->att->addr;
	return rc;
}

int hetmm_file_sync(struct hetmm_file *f)
{
	if (!f || !file_listed(f) || !f->att)
		return -EINVAL;
	int rc = ctx_usable(f->ctx);
	return rc ? rc : attach_sync(f);
}

int hetmm_file_destroy(struct hetmm_file *f)
{
	if (!f || !file_listed(f))
		return -EINVAL;
	int rc = ctx_usable(f->ctx);
	if (rc)
		return rc;
	/* An attached range goes to the file, then away: nothing to read
	 * back when the pagemap goes. */
	if (f->att) {
		rc = attach_sync(f);
		if (rc)
			return rc;
		attach_free(f);
	}
	rc = hetmm_pagemap_remove_managed(f->pgmap, f);
	if (rc)
		return rc;
	if (!file_unlist(f))
		return -EINVAL;
	hetmm_notifier_remove(f->life);
	file_free(f);
	return 0;
}

int hetmm_file_pagemap(struct hetmm_file *f, struct hetmm_pagemap **pgmapp)
{
	if (!f || !pgmapp || !file_listed(f))
		return -EINVAL;
	int rc = ctx_usable(f->ctx);
	if (rc)
		return rc;
	*pgmapp = f->pgmap;
	return 0;
}

int hetmm_file_get_info(struct hetmm_file *f, struct hetmm_file_info *info)
{
	if (!f || !info || !file_listed(f))
		return -EINVAL;
	int rc = ctx_usable(f->ctx);
	if (rc)
		return rc;
	*info = f->info;
	info->pages_read = atomic_load(&f->pages_read);
	info->pages_written = atomic_load(&f->pages_written);
	info->io_errors = atomic_load(&f->io_errors);
	info->holes_punched = atomic_load(&f->punched);
	info->resident = info->evicted = 0;
	if (f->att) {
		pthread_mutex_lock(&f->att->lock);
		info->resident = f->att->nr_in;
		pthread_mutex_unlock(&f->att->lock);
		info->evicted = atomic_load(&f->att->evicted);
	}
	return 0;
}

int hetmm_file_inject_error(struct hetmm_file *f, int write, uint64_t index,
			    uint64_t nr, int err)
{
	if (!f || !file_listed(f) || err > 0 || err < -4095 ||
	    index > f->nr_pages || nr > f->nr_pages - index)
		return -EINVAL;
	int rc = ctx_usable(f->ctx);
	if (rc)
		return rc;
	struct file_fault *ff = &f->fault[write ? 1 : 0];
	atomic_store(&ff->err, 0);
	atomic_store(&ff->first, index);
	atomic_store(&ff->end, index + nr);
	atomic_store(&ff->err, err);
	return 0;
}

/* SPDX-License-Identifier: MIT */
/*
 * deputy.c - the fault handler's deputy (deputy.h).
 *
 * While the handler is away (away.h), the deputy reads the userfaultfd
 * and serves the faults that need no device page, as fault_zero and
 * fault_unprotect serve them for the handler (the engine's serve
 * callback): a hole gets zeroes, a page already there its thread's wake,
 * a write-protected page no migration holds its protection lifted.  What
 * needs the handler (a device page, a claimed page, an event, a sync,
 * the doorbell) it keeps, in order, for the handler to take as its next
 * batches.  Not device pages, even another device's: bringing one back
 * is ordered with events through the handler (handler_sync), which is
 * away.  And when the handler's own thread waits in a fault on a hole,
 * the deputy fills it (the rescue).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "away.h"
#include "ctx.h"
#include "deputy.h"
#include "entry.h"
#include "testhook.h"
#include "uffd.h"

/* The deputy looks every tick, serves once the handler has been away on
 * one trip for a whole tick, and parks after a second with no trip. */
#define DEPUTY_TICK_MS 10
#define DEPUTY_PARK_TICKS 100
/* Messages the deputy keeps for the handler; faults may take all but
 * the last quarter, which is left to events (a fault it can't keep is
 * woken to come again; an event can't be). */
#define DEPUTY_KEPT 1024
#define DEPUTY_KEPT_FAULTS (DEPUTY_KEPT * 3 / 4)

/* Messages read and kept for the handler, in the order read. */
struct msg_queue {
	struct uffd_msg m[DEPUTY_KEPT];
	size_t n, faults;
};

struct deputy {
	struct hetmm_ctx *ctx;
	deputy_serve_fn *serve;
	/* The handler's trips and batches (the engine's). */
	struct handler_away *away;
	pthread_t thread;
	bool running;
	atomic_bool stop;
	/* What the deputy read but left to the handler: kept, while the
	 * handler was away (or by the handler itself, in the middle of a
	 * batch), and rescued, by a rescue, which alone touches them while
	 * it reads; the handler moves them over to kept (rescued_merge)
	 * where no rescue can run. */
	struct msg_queue kept, rescued;
	/* The handler's batch after its current message (deputy_batch_rest):
	 * read before anything kept, touched by the deputy only while it
	 * serves a trip. */
	struct uffd_msg *rest;
	size_t nrest;
	/* For the rescue: the handler's thread id (0 until it runs; the
	 * messages name it where the kernel gives UFFD_FEATURE_THREAD_ID),
	 * and the page mask, which the deputy reads nowhere else then. */
	_Atomic uint32_t handler_tid;
	uintptr_t page_mask;
	struct own_range own_stack;
};

/* uffd_wake for the deputy's rescue: no intercepted ioctl (base.h). */
NO_TSAN static void raw_wake(int fd, uintptr_t addr, uintptr_t len)
{
	struct uffdio_range r = { .start = addr, .len = len };
	syscall(SYS_ioctl, fd, UFFDIO_WAKE, &r);
}

/* Keep message m for the handler in q, after the current batch (there
 * is room: q->n < DEPUTY_KEPT); a fault beyond DEPUTY_KEPT_FAULTS is
 * woken to come again instead.  An event kept holds the handler's fills
 * back (*held, away.h).  The rescue's too: NO_TSAN. */
NO_TSAN static void queue_add(struct deputy *d, struct msg_queue *q,
			      atomic_bool *held, const struct uffd_msg *m)
{
	bool event = m->event != UFFD_EVENT_PAGEFAULT;
	if (!event && q->faults >= DEPUTY_KEPT_FAULTS) {
		uintptr_t mask = d->page_mask; /* it comes again: */
		raw_wake(d->ctx->uffd.fd, m->arg.pagefault.address & mask,
			 ~mask + 1);
		return;
	}
	q->m[q->n++] = *m;
	q->faults += !event;
	if (event)
		atomic_store(held, true);
}

NO_TSAN static void kept_add(struct deputy *d, const struct uffd_msg *m)
{
	queue_add(d, &d->kept, &d->away->events_held, m);
}

/*
 * Move what a rescue kept over to kept, after what is there (the rescue
 * read it later), as much as fits; whether none is left.  Only where no
 * rescue runs: on the handler between its batches or while it keeps
 * (away.h), on the deputy serving a trip.
 */
NO_TSAN bool rescued_merge(struct deputy *d)
{
	struct msg_queue *k = &d->kept, *r = &d->rescued;
	size_t n = 0;
	bool events = false;
	for (; n < r->n && k->n < DEPUTY_KEPT; n++) {
		bool event = r->m[n].event != UFFD_EVENT_PAGEFAULT;
		k->m[k->n++] = r->m[n];
		k->faults += !event;
		r->faults -= !event;
		events |= event;
	}
	for (size_t i = n; i < r->n; i++)
		r->m[i - n] = r->m[i];
	r->n -= n;
	if (events)
		atomic_store(&d->away->events_held, true);
	if (!r->n)
		atomic_store(&d->away->events_rescued, false);
	return !r->n;
}

NO_TSAN bool rescued_pending(const struct deputy *d)
{
	return d->rescued.n;
}

/* Read up to want messages from the userfaultfd; with nonblock, only
 * what waits (the file's flags put back after).  Raw system calls. */
NO_TSAN static long deputy_read(struct deputy *d, struct uffd_msg *msgs,
				size_t want, bool nonblock)
{
	int fd = d->ctx->uffd.fd;
	long fl = nonblock ? syscall(SYS_fcntl, fd, F_GETFL) : -1;
	if (fl >= 0)
		syscall(SYS_fcntl, fd, F_SETFL, fl | O_NONBLOCK);
	long got = syscall(SYS_read, fd, msgs, want * sizeof(*msgs));
	int err = errno;
	if (fl >= 0)
		syscall(SYS_fcntl, fd, F_SETFL, fl);
	errno = err;
	return got;
}

/*
 * Take the handler's own missing faults out of batch m[0, n), the rest
 * left in order: their count.  The page of the last in *own (the
 * handler waits in one fault at a time).  Such a fault is on a hole of
 * a mapping registered whole that no asked range of any context's
 * reaches: the handler's code touches only memory hetmm owns, its
 * thread's stack, and a runtime's or a malloc arena's (or a driver's
 * pool's) pages the kernel merged there.
 */
NO_TSAN static size_t own_faults_take(const struct deputy *d,
				      struct uffd_msg *m, size_t n,
				      uintptr_t *own)
{
	uint32_t tid = atomic_load(&d->handler_tid);
	size_t j = 0;
	for (size_t i = 0; i < n; i++) {
		if (tid && m[i].event == UFFD_EVENT_PAGEFAULT &&
		    m[i].arg.pagefault.feat.ptid == tid &&
		    !(m[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP))
			*own = m[i].arg.pagefault.address & d->page_mask;
		else
			m[j++] = m[i];
	}
	return j;
}

/* Read a batch of at most room messages (FAULT_READ_BATCH at most),
 * only what waits while the handler's own fault *own is unfilled, and
 * take the handler's own faults out of it: the rest's count, or -1 with
 * errno. */
NO_TSAN static long deputy_read_batch(struct deputy *d, struct uffd_msg *msgs,
				      size_t room, uintptr_t *own)
{
	long got = deputy_read(d, msgs, MIN(room, (size_t)FAULT_READ_BATCH),
			       *own != 0);
	if (got < 0)
		return got;
	return (long)own_faults_take(d, msgs, (size_t)got / sizeof(msgs[0]),
				     own);
}

/* The event that recalls the deputy: the handler's discard of its
 * recall page (away.h, away_end). */
NO_TSAN static bool is_recall(const struct uffd_msg *m, uintptr_t recall)
{
	return m->event == UFFD_EVENT_REMOVE && m->arg.remove.start == recall;
}

/* Fill the handler's own fault at addr, a hole: 0, or -EAGAIN while an
 * event waits to be read.  A page there already, or gone, is woken. */
NO_TSAN static int rescue_fill(int fd, uintptr_t addr, uintptr_t page)
{
	struct uffdio_zeropage z = { .range = { .start = addr, .len = page } };
	if (syscall(SYS_ioctl, fd, UFFDIO_ZEROPAGE, &z) == 0)
		return 0;
	if (errno == EAGAIN)
		return -EAGAIN;
	raw_wake(fd, addr, page);
	return 0;
}

/* Fill the handler's own fault at *own (then 0), or, while the kernel
 * refuses it (rescue_fill), nap: the deputy reads only what waits
 * meanwhile, as the handler's fault will not come again.  Whether it
 * filled. */
NO_TSAN static bool own_fill(struct deputy *d, uintptr_t *own)
{
	if (rescue_fill(d->ctx->uffd.fd, *own, ~d->page_mask + 1) == 0) {
		*own = 0;
		return true;
	}
	struct timespec nap = { 0, 100000 };
	syscall(SYS_nanosleep, &nap, NULL);
	return false;
}

/*
 * Serve message m if the deputy may: whether it did.  A fault on a page
 * none of whose events it keeps (nor a rescue), and then as the engine
 * says: handled at once, a page with an event read but not handled
 * could land after a discard's zap or where an mremap's device pages
 * are about to go (see fault_handler_main()).
 */
static bool deputy_served(struct deputy *d, const struct uffd_msg *m)
{
	uintptr_t addr = (uintptr_t)m->arg.pagefault.address & PAGE_MASK;
	if (m->event != UFFD_EVENT_PAGEFAULT ||
	    uffd_event_in(d->kept.m, d->kept.n, addr, addr + PAGE_SIZE) ||
	    uffd_event_in(d->rescued.m, d->rescued.n, addr, addr + PAGE_SIZE))
		return false;
	TEST_HOOK(TEST_HOOK_DEPUTY_SERVE, addr, PAGE_SIZE);
	return d->serve(d->ctx, m);
}

/* A message the deputy read: served, or kept for the handler. */
static void deputy_take(struct deputy *d, const struct uffd_msg *m)
{
	if (!deputy_served(d, m))
		kept_add(d, m);
}

/*
 * Serve what the deputy may of the handler's own batch, which the
 * handler read before the deputy read anything it keeps: a thread may
 * hold the lock the handler waits for away while it waits in one of
 * those faults.  Under ThreadSanitizer test_stress hung so in about 1
 * run of 30: a worker in the emulated mirror's lock, holding the
 * runtime's deadlock detector's lock in a userfault on a new page of
 * the detector's graph, that fault in the handler's batch after the
 * fault back whose invalidation waited for the mirror's lock.
 */
static void batch_serve(struct deputy *d)
{
	for (size_t i = 0; i < d->nrest; i++) {
		struct uffd_msg *m = &d->rest[i];
		if (deputy_served(d, m))
			m->event = MSG_SERVED;
	}
}

/* Serve what the deputy may of the faults a rescue kept (deputy_rescue
 * serves the handler's own alone): a driver's thread may wait in one
 * for the trip that begins. */
static void kept_serve(struct deputy *d)
{
	struct msg_queue *k = &d->kept;
	size_t j = 0;
	rescued_merge(d);
	k->faults = 0;
	for (size_t i = 0; i < k->n; i++) {
		struct uffd_msg m = k->m[i];
		bool fault = m.event == UFFD_EVENT_PAGEFAULT;
		if (fault && deputy_served(d, &m))
			continue;
		k->m[j++] = m;
		k->faults += fault;
	}
	k->n = j;
}

/*
 * Read and serve until the handler's recall (away_end) is read.  With
 * the kept messages all events (threads each blocked in munmap, madvise
 * or mremap, DEPUTY_KEPT - DEPUTY_KEPT_FAULTS of them), it reads no
 * more, and the handler's recall waits for the handler's return.
 *
 * A missing fault of the handler's own thread (a driver's code it runs,
 * or its own, touching a hole of a mapping registered whole) is filled
 * as the rescue fills it, first, before anything instrumented runs for
 * the batch: under ThreadSanitizer the engine's serving code records
 * stacks and sync objects in the runtime's blocks, and the handler's
 * fault may be on the very page it would record them in (test_deverr
 * hung so, 2 full `make tsan` runs in 3: the handler, the deputy in
 * fault_zero's compare-and-swap and the main thread all waiting in a
 * userfault on one new page of the stack depot, merged into the test's
 * mapping).
 */
static void deputy_serve(struct deputy *d)
{
	struct uffd_msg msgs[FAULT_READ_BATCH];
	uintptr_t recall = (uintptr_t)d->away->recall, own = 0;
	bool recalled = false;
	batch_serve(d);
	kept_serve(d);
	while ((!recalled || own) && d->kept.n < DEPUTY_KEPT &&
	       !d->rescued.n) {
		long n = deputy_read_batch(d, msgs, DEPUTY_KEPT - d->kept.n,
					   &own);
		if (n < 0 && errno != EINTR && errno != EAGAIN)
			break;
		if (own)
			own_fill(d, &own);
		for (long i = 0; i < n; i++) {
			if (is_recall(&msgs[i], recall))
				recalled = true;
			else
				deputy_take(d, &msgs[i]);
		}
	}
}

/* The deputy's thread exits next (its main is NO_TSAN: a test's hook
 * is not). */
static void deputy_exit_hook(void)
{
	TEST_HOOK(TEST_HOOK_DEPUTY_EXIT, 0, 0);
}

/* The deputy serves the handler's trip, seen on the same trip a tick
 * ago, unless the handler came back meanwhile. */
static void deputy_away(struct deputy *d, uint32_t now)
{
	_Atomic uint32_t *word = &d->away->word;
	if (!atomic_compare_exchange_strong(word, &now, now | AWAY_SERVING))
		return;
	deputy_serve(d);
	atomic_fetch_and(word, ~AWAY_SERVING);
	futex_word(word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
}

/* The decimal digits of v at the end of buf[0, n): where they start. */
NO_TSAN static char *decimal_tail(char *buf, size_t n, uint32_t v)
{
	char *p = buf + n;
	do
		*--p = (char)('0' + v % 10);
	while ((v /= 10) && p > buf);
	return p;
}

/*
 * Does thread tid sleep in a userfault?  The kernel names the function
 * a sleeping thread waits in (/proc, "wchan"); where it names none
 * (no symbols) this says no, and nothing is rescued.
 */
NO_TSAN static bool thread_in_userfault(uint32_t tid)
{
	static const char want[] = "handle_userfault";
	char path[64] = "/proc/self/task/", num[12], got[sizeof(want) + 1];
	char *d = decimal_tail(num, sizeof(num), tid), *p = path + 16;
	while (d < num + sizeof(num))
		*p++ = *d++;
	const char *tail = "/wchan";
	while ((*p++ = *tail++))
		;
	long fd = syscall(SYS_openat, AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	long n = syscall(SYS_read, fd, got, sizeof(got));
	syscall(SYS_close, fd);
	if (n != (long)sizeof(want) - 1)
		return false;
	for (long i = 0; i < n; i++)
		if (got[i] != want[i])
			return false;
	return true;
}

/*
 * The rescue (away.h): the handler has been busy on one batch for a
 * tick, asleep in a userfault.  Read as the deputy serving a trip does,
 * but serve only the handler's own missing fault, a hole of a mapping
 * registered whole that no asked range of any context's reaches (its
 * own code touches only memory hetmm owns, its thread's stack and a
 * runtime's or a malloc arena's pages the kernel merged there), with
 * the zeroes the kernel would have given it.  Everything else is kept
 * for the handler, as a trip's messages are: events the rescue read
 * hold the handler's fills back (uffd.c), and a sync read after an
 * event is answered after it.  Stop once that fault is filled, unless
 * the handler is recalling (then read on until its event).  NO_TSAN:
 * under ThreadSanitizer the handler waits on the runtime's memory, and
 * so would the deputy.
 */
NO_TSAN static void deputy_rescue(struct deputy *d, uint32_t now)
{
	_Atomic uint32_t *word = &d->away->word;
	if (!atomic_compare_exchange_strong(word, &now, now | AWAY_SERVING))
		return;
	uintptr_t recall = (uintptr_t)d->away->recall, own = 0;
	bool filled = false, recalled = false;
	struct uffd_msg msgs[FAULT_READ_BATCH];
	struct msg_queue *q = &d->rescued;
	while (!recalled && q->n < DEPUTY_KEPT) {
		/* With the handler's fault refused, read only what waits:
		 * the kernel refuses fills until the thread whose event was
		 * read has run (handler_refused), and may have nothing more
		 * to say.  The handler, asleep, is not reading meanwhile. */
		long n = deputy_read_batch(d, msgs, DEPUTY_KEPT - q->n, &own);
		for (long i = 0; i < n; i++) {
			if (is_recall(&msgs[i], recall))
				recalled = true;
			else
				queue_add(d, q, &d->away->events_rescued,
					  &msgs[i]);
		}
		if (own)
			filled |= own_fill(d, &own);
		uint32_t w = atomic_load(word);
		if (filled && !recalled && !(w & AWAY_RECALL) &&
		    atomic_compare_exchange_strong(word, &w, w & ~AWAY_SERVING))
			return;
	}
	atomic_fetch_and(word, ~AWAY_SERVING);
	futex_word(word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
}

/*
 * The deputy's thread: a look every tick at the handler's word.  The
 * handler away on the same trip as a tick ago: serve until recalled.
 * Busy on the same batch, asleep in a userfault: the rescue.  Neither
 * busy nor away for DEPUTY_PARK_TICKS: park until the handler next
 * leaves or reads a batch (away.c wakes it), so that an idle context
 * costs no wake-ups.  NO_TSAN, so that its ticks never take it into the
 * runtime's memory while the handler waits there (deputy_serve, for a
 * trip, is instrumented as the handler's code is).
 */
NO_TSAN static void *deputy_main(void *arg)
{
	struct deputy *d = arg;
	_Atomic uint32_t *word = &d->away->word;
	bool rescue = d->ctx->uffd.features & UFFD_FEATURE_THREAD_ID;
	uint32_t last = atomic_load(word);
	unsigned idle = 0;
	while (!atomic_load(&d->stop)) {
		struct timespec tick = { 0, DEPUTY_TICK_MS * 1000000L };
		futex_word(word, FUTEX_WAIT_PRIVATE, last, &tick);
		uint32_t now = atomic_load(word);
		if (now != last) {
			idle = 0;
		} else if (now & AWAY_OUT) {
			deputy_away(d, now);
		} else if (now & AWAY_BUSY) {
			if (rescue && !(now & AWAY_KEEPING) &&
			    thread_in_userfault(atomic_load(&d->handler_tid)))
				deputy_rescue(d, now);
		} else if (++idle >= DEPUTY_PARK_TICKS) {
			idle = 0;
			if (atomic_compare_exchange_strong(word, &now,
							   now | AWAY_PARKED)) {
				futex_word(word, FUTEX_WAIT_PRIVATE,
					   now | AWAY_PARKED, NULL);
				atomic_fetch_and(word, ~AWAY_PARKED);
			}
		}
		last = atomic_load(word);
	}
	deputy_exit_hook();
	return NULL;
}

void deputy_batch_rest(struct deputy *d, struct uffd_msg *rest, size_t n)
{
	d->rest = rest;
	d->nrest = n;
}

/* Events still kept after the batch taken hold the handler's fills
 * back (away.h). */
size_t kept_take(struct deputy *d, struct uffd_msg *msgs)
{
	struct msg_queue *k = &d->kept;
	size_t n = MIN(k->n, (size_t)FAULT_READ_BATCH);
	if (!n)
		return 0;
	memcpy(msgs, k->m, n * sizeof(*msgs));
	k->n -= n;
	memmove(k->m, k->m + n, k->n * sizeof(*msgs));
	bool events = false;
	k->faults = 0;
	for (size_t i = 0; i < k->n; i++) {
		bool event = k->m[i].event != UFFD_EVENT_PAGEFAULT;
		events |= event;
		k->faults += !event;
	}
	atomic_store(&d->away->events_held, events);
	return n;
}

/*
 * As the deputy keeps what it reads; events kept hold the handler's
 * fills back (away.h).  The file's flags are the deputy's too, but it
 * reads only while the handler is away or rescued, and the handler is
 * neither: a rescue is recalled first, and what it kept goes first.
 * NO_TSAN, raw system calls: no rescue starts meanwhile (away.h), so
 * nothing here may fault.
 */
NO_TSAN void kept_read_waiting(struct deputy *d)
{
	int fd = d->ctx->uffd.fd;
	away_keep_begin(d->away);
	long fl = syscall(SYS_fcntl, fd, F_GETFL);
	if (rescued_merge(d) && fl >= 0 &&
	    syscall(SYS_fcntl, fd, F_SETFL, fl | O_NONBLOCK) == 0) {
		struct uffd_msg msgs[FAULT_READ_BATCH];
		while (d->kept.n < DEPUTY_KEPT) {
			size_t want = MIN(DEPUTY_KEPT - d->kept.n,
					  (size_t)FAULT_READ_BATCH);
			long got = syscall(SYS_read, fd, msgs,
					   want * sizeof(msgs[0]));
			if (got <= 0)
				break;
			for (long i = 0; i < got / (long)sizeof(msgs[0]); i++)
				kept_add(d, &msgs[i]);
		}
		syscall(SYS_fcntl, fd, F_SETFL, fl);
	}
	away_keep_end(d->away);
}

bool kept_full(const struct deputy *d)
{
	return d->kept.n == DEPUTY_KEPT;
}

bool kept_event_in(const struct deputy *d, uintptr_t start, uintptr_t end)
{
	return uffd_event_in(d->kept.m, d->kept.n, start, end);
}

struct deputy *deputy_create(struct hetmm_ctx *ctx, struct handler_away *a,
			     deputy_serve_fn *serve)
{
	struct deputy *d = calloc(1, sizeof(*d));
	if (!d)
		return NULL;
	/* The handler and the rescue touch it where no fault may come. */
	touch_pages(d, sizeof(*d));
	d->ctx = ctx;
	d->serve = serve;
	d->away = a;
	d->page_mask = PAGE_MASK;
	return d;
}

void deputy_destroy(struct deputy *d)
{
	if (!d)
		return;
	entry_disown(d->ctx, &d->own_stack);   /* harmless if never owned */
	free(d);
}

void deputy_attach(struct deputy *d)
{
	atomic_store(&d->handler_tid, (uint32_t)syscall(SYS_gettid));
}

int deputy_start(struct deputy *d)
{
	int rc = hetmm_thread_create(&d->thread, deputy_main, d);
	if (rc)
		return rc;
	d->running = true;
	return entry_own_thread_stack(d->ctx, d->thread, &d->own_stack);
}

/* The handler reads no more: nothing is away.  The stop flag, then a
 * trip of the word that the deputy's wait compares (parked or not).
 * NO_TSAN: nobody reads the userfaultfd now, and the flag's first
 * instrumented access (the deputy's loads are NO_TSAN) took the
 * destroying thread into the runtime's memory, a hole of a mapping
 * registered whole: test_deverr hung so under TSan, 1 run in 7. */
NO_TSAN void deputy_stop(struct deputy *d)
{
	if (!d->running)
		return;
	atomic_store(&d->stop, true);
	atomic_fetch_add(&d->away->word, AWAY_TRIP);
	futex_word(&d->away->word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL);
}

void deputy_join(struct deputy *d)
{
	if (d->running)
		pthread_join(d->thread, NULL);
	d->running = false;
}

/* SPDX-License-Identifier: MIT */
/*
 * test_signal: hetmm's own threads never take the application's signals.
 *
 * The kernel gives a process-directed signal to any thread that does not
 * block it.  Were that hetmm's fault-handler thread, a signal handler
 * that touches a device page would fault on the one thread that serves
 * faults, and the context would hang (fuzz/FINDINGS.md F2); the same for
 * a driver's thread whose copy the handler waits on (hetmm_thread_create).
 * Checked two ways: every thread hetmm or a driver started (the file
 * device's) blocks the asynchronous signals, as
 * the kernel reports its mask, and blocks those the CPU raises only as a
 * thread of the test's started the same way does; and a signal
 * sent to the process while the application blocks it stays pending
 * until the application unblocks it, then runs on the application's
 * thread, and its read of a device page completes with the right bytes.
 */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "t.h"

#define MAX_TASKS 64

static struct hetmm_ctx *ctx;
static struct hetmm_emu *emu;
static struct hetmm_pagemap *pg;
static struct hetmm_file *attached;
static char tmpdir[] = "/tmp/hetmm-signal-XXXXXX";

/* The thread ids of this process (/proc/self/task); returns how many. */
static int task_ids(pid_t *ids)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	REQUIRE(d != NULL);
	while ((e = readdir(d)) != NULL && n < MAX_TASKS) {
		if (e->d_name[0] != '.')
			ids[n++] = (pid_t)atoi(e->d_name);
	}
	closedir(d);
	return n;
}

static bool listed(const pid_t *ids, int n, pid_t id)
{
	for (int i = 0; i < n; i++)
		if (ids[i] == id)
			return true;
	return false;
}

/* The blocked-signal mask of thread tid, as the kernel keeps it. */
static uint64_t blocked_mask(pid_t tid)
{
	char path[64], line[256];
	unsigned long long mask = 0;
	bool found = false;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/status", (int)tid);
	f = fopen(path, "r");
	REQUIRE(f != NULL);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "SigBlk: %llx", &mask) == 1)
			found = true;
	fclose(f);
	REQUIRE(found);
	return mask;
}

/* An io_uring worker (io-wq's "iou-wrk-", SQPOLL's "iou-sqp-"): the
 * kernel's own thread in the process, which runs no user code and so no
 * signal handler, whatever its mask says. */
static bool io_uring_worker(pid_t tid)
{
	char path[64], comm[32] = "";
	snprintf(path, sizeof(path), "/proc/self/task/%d/comm", (int)tid);
	FILE *f = fopen(path, "r");
	if (!f)
		return false;   /* gone: it was a worker that exited */
	bool got = fgets(comm, sizeof(comm), f) != NULL;
	fclose(f);
	return got && strncmp(comm, "iou-", 4) == 0;
}

static bool sig_in(uint64_t mask, int sig)
{
	return mask >> (sig - 1) & 1;
}

/* ------------------------------------------------------------------------
 * What the signal handler saw.
 */
static _Atomic pid_t ran_on;         /* the thread the handler ran on */
static _Atomic int handled;          /* 1 once its read returned */
static _Atomic uint64_t word_read;
static const volatile uint64_t *device_word;

static void on_usr2(int sig)
{
	(void)sig;
	atomic_store(&ran_on, gettid());
	atomic_store(&word_read, *device_word);   /* faults the page back */
	atomic_store(&handled, 1);
}

/*
 * A thread starts with every signal blocked and sets the mask it was
 * given once it runs (glibc): a fault served, and the handler is past
 * that.
 */
static void serve_one_fault(void)
{
	char *p = t_map(1);

	t_fill(p, 1, 3);
	t_to_device(pg, p, 1);
	t_verify(p, 1, 3);
	t_unmap(p, 1);
}

/* The signals the CPU raises on the thread that caused them. */
static const int sync_sigs[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP,
				 SIGSYS };
#define NSYNC (sizeof(sync_sigs) / sizeof(*sync_sigs))

/*
 * A thread of the test's own, started as hetmm should start its threads:
 * every signal blocked but the synchronous ones.  Its mask, once its
 * function runs, is what this runtime makes of that.
 */
static _Atomic pid_t ref_tid;
static atomic_int ref_release;

static void *reference_main(void *arg)
{
	(void)arg;
	atomic_store(&ref_tid, gettid());
	while (!atomic_load(&ref_release))
		usleep(1000);
	return NULL;
}

static uint64_t reference_mask(void)
{
	sigset_t all, old;
	pthread_t th;

	sigfillset(&all);
	for (size_t k = 0; k < NSYNC; k++)
		sigdelset(&all, sync_sigs[k]);
	REQUIRE(pthread_sigmask(SIG_SETMASK, &all, &old) == 0);
	REQUIRE(pthread_create(&th, NULL, reference_main, NULL) == 0);
	REQUIRE(pthread_sigmask(SIG_SETMASK, &old, NULL) == 0);
	while (!atomic_load(&ref_tid))
		usleep(1000);
	uint64_t mask = blocked_mask(atomic_load(&ref_tid));
	atomic_store(&ref_release, 1);
	pthread_join(th, NULL);
	return mask;
}

/* Drivers' threads, started with hetmm_thread_create: an attached file
 * has an evictor thread, and its device a completion thread where
 * io_uring works. */
static void start_driver_threads(void)
{
	char path[64];
	REQUIRE(mkdtemp(tmpdir) != NULL);
	snprintf(path, sizeof(path), "%s/file", tmpdir);
	struct hetmm_file_desc d = { .path = path, .nr_pages = 16,
				     .max_resident = 4 };
	void *addr;
	REQUIRE_OK(hetmm_file_attach(ctx, &d, &attached, &addr));
}

static void stop_driver_threads(void)
{
	char path[64];
	CHECK_OK(hetmm_file_destroy(attached));
	snprintf(path, sizeof(path), "%s/file", tmpdir);
	unlink(path);
	rmdir(tmpdir);
}

/* A thread's mask once it has started: glibc starts a new thread with
 * every signal blocked and sets the creator's mask only as the thread
 * begins to run, so one just made may not have run yet.  Read until the
 * synchronous signals are as a thread started so has them, for 2 s. */
static uint64_t settled_mask(pid_t tid, uint64_t ref)
{
	uint64_t mask = blocked_mask(tid);
	for (int t = 0; t < 200; t++) {
		bool settled = true;
		for (size_t k = 0; k < NSYNC; k++)
			settled &= sig_in(mask, sync_sigs[k]) ==
				   sig_in(ref, sync_sigs[k]);
		if (settled)
			break;
		usleep(10000);
		mask = blocked_mask(tid);
	}
	return mask;
}

/* Every thread the context and the drivers started blocks the
 * asynchronous signals and leaves the synchronous ones to the CPU. */
static void check_library_masks(const pid_t *before, int nbefore,
				uint64_t own_mask, uint64_t ref)
{
	static const int async[] = { SIGHUP, SIGINT, SIGQUIT, SIGUSR1,
				     SIGUSR2, SIGPIPE, SIGALRM, SIGTERM,
				     SIGCHLD, SIGCONT, SIGTSTP, SIGURG,
				     SIGXCPU, SIGVTALRM, SIGPROF, SIGWINCH,
				     SIGIO, SIGPWR };
	pid_t now[MAX_TASKS];
	int n = task_ids(now), started = 0;

	for (int i = 0; i < n; i++) {
		if (listed(before, nbefore, now[i]) ||
		    io_uring_worker(now[i]))
			continue;
		started++;
		uint64_t mask = settled_mask(now[i], ref);
		for (size_t k = 0; k < sizeof(async) / sizeof(*async); k++)
			if (!sig_in(mask, async[k]))
				t_fail(__FILE__, __LINE__, "hetmm thread %d "
				       "takes signal %d (SigBlk %016llx)",
				       (int)now[i], async[k],
				       (unsigned long long)mask);
		if (!sig_in(mask, SIGRTMIN + 1) || !sig_in(mask, SIGRTMAX))
			t_fail(__FILE__, __LINE__, "hetmm thread %d takes "
			       "real-time signals", (int)now[i]);
		for (size_t k = 0; k < NSYNC; k++)
			if (sig_in(mask, sync_sigs[k]) != sig_in(ref, sync_sigs[k]))
				t_fail(__FILE__, __LINE__, "hetmm thread %d "
				       "blocks signal %d (SigBlk %016llx), a "
				       "thread started so would not (%016llx)",
				       (int)now[i], sync_sigs[k],
				       (unsigned long long)mask,
				       (unsigned long long)ref);
	}
	CHECK(started >= 2);   /* the fault handler and the evictor */
	/* The creating thread's own mask is as it was. */
	CHECK_EQ(blocked_mask(gettid()), own_mask);
}

/*
 * SIGUSR2 to the process while the only application thread blocks it.
 * Before the fix the handler thread took it and hung in the handler's
 * fault; the main thread here never waits on anything that could hang.
 */
static bool test_process_signal(void)
{
	const size_t n = 4;
	char *p = t_map(n);
	struct sigaction sa = { .sa_handler = on_usr2 };
	sigset_t usr2, pending;
	bool ok;

	t_fill(p, n, 7);
	t_to_device(pg, p, n);
	REQUIRE(t_count_on_device(ctx, p, n) == n);
	device_word = (const volatile uint64_t *)(p + 2 * PS);
	sigemptyset(&sa.sa_mask);
	REQUIRE(sigaction(SIGUSR2, &sa, NULL) == 0);

	sigemptyset(&usr2);
	sigaddset(&usr2, SIGUSR2);
	REQUIRE(pthread_sigmask(SIG_BLOCK, &usr2, NULL) == 0);
	REQUIRE(kill(getpid(), SIGUSR2) == 0);
	/* Long enough for any thread that does not block it to take it. */
	double end = t_now() + 0.5;
	while (!atomic_load(&ran_on) && t_now() < end)
		usleep(1000);
	if (atomic_load(&ran_on))
		t_fail(__FILE__, __LINE__, "SIGUSR2, blocked by the "
		       "application, ran on hetmm's thread %d",
		       (int)atomic_load(&ran_on));
	REQUIRE(sigpending(&pending) == 0);
	CHECK(sigismember(&pending, SIGUSR2));

	/* Unblocked, it runs here before pthread_sigmask returns. */
	REQUIRE(pthread_sigmask(SIG_UNBLOCK, &usr2, NULL) == 0);
	end = t_now() + 5.0;
	while (!atomic_load(&handled) && t_now() < end)
		usleep(1000);
	ok = atomic_load(&handled) == 1;
	if (!ok)
		t_fail(__FILE__, __LINE__, "the handler's read of a device "
		       "page did not complete in 5 s (ran on thread %d)",
		       (int)atomic_load(&ran_on));
	CHECK_EQ(atomic_load(&ran_on), gettid());
	uint64_t want[PS / 8];
	t_fill_from(want, 1, 7, 2);
	CHECK_EQ(atomic_load(&word_read), want[0]);
	if (ok) {
		t_verify(p, n, 7);
		t_unmap(p, n);
	}
	return ok;
}

int main(void)
{
	pid_t before[MAX_TASKS];
	int nbefore;

	/* A watchdog: a hang anywhere ends the test as a failure, soon. */
	alarm(60);
	/* First, so that a runtime's own thread started with the process's
	 * first thread (TSan's) is not taken for hetmm's. */
	uint64_t ref = reference_mask();
	nbefore = task_ids(before);
	uint64_t own_mask = blocked_mask(gettid());
	t_emu_up(&ctx, NULL, 16, &emu, &pg);
	serve_one_fault();
	start_driver_threads();
	check_library_masks(before, nbefore, own_mask, ref);
	/* A handler thread stuck in a signal handler's fault would hang
	 * the context's destruction too (it waits for the thread). */
	if (test_process_signal()) {
		stop_driver_threads();
		CHECK_OK(hetmm_ctx_destroy(ctx));
	}
	return t_done();
}

/* SPDX-License-Identifier: MIT */
/*
 * thread.c - threads that take none of the application's signals:
 * hetmm's fault handler and drivers' threads (hetmm_thread_create).
 *
 * The kernel gives a process-directed signal to any thread that does not
 * block it.  A signal handler run on the fault handler, or on a thread
 * whose copy the handler waits for, that touches a device page would
 * fault where only that thread can let the fault finish: the context
 * would hang (fuzz/FINDINGS.md F2).  So such threads start with every
 * signal blocked but those the CPU raises on the thread itself (a crash
 * of ours must still be reported, and the kernel kills the process
 * outright for a blocked one), and the creating thread gets its own mask
 * back.  (glibc keeps its internal signals, for cancellation and setxid,
 * unblocked.)
 */
#include <errno.h>
#include <signal.h>

#include "hetmm.h"

int hetmm_thread_create(pthread_t *thread, void *(*fn)(void *), void *arg)
{
	static const int synchronous[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL,
					   SIGTRAP, SIGSYS };
	if (!thread || !fn)
		return -EINVAL;
	sigset_t all, old;
	sigfillset(&all);
	for (size_t i = 0; i < sizeof(synchronous) / sizeof(*synchronous); i++)
		sigdelset(&all, synchronous[i]);
	int rc = pthread_sigmask(SIG_SETMASK, &all, &old);
	if (rc)
		return -rc;
	rc = pthread_create(thread, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -rc;
}

/* SPDX-License-Identifier: MIT */
/*
 * tbus.h - reading a byte that may raise SIGBUS (a page whose device
 * failed, a file that could not be read), for the tests that check it.
 *
 * t_bus_catch() installs the handler; t_touch() then reads a byte in a
 * thread of its own (SIGBUS goes to the faulting thread, and the thread
 * is left through siglongjmp, which the main thread of a test should not
 * be), or t_touch_here() in the calling thread where a test may not start
 * one (a fork child under ThreadSanitizer).  The last SIGBUS's thread,
 * address and code are kept in t_bus_*, and t_bus_count counts them.  A
 * SIGBUS outside a touch ends the test with status 99: none was due.
 */
#ifndef HETMM_TEST_TBUS_H
#define HETMM_TEST_TBUS_H

#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/syscall.h>

#include "t.h"

struct t_touch {
	const volatile char *addr;      /* the byte to read */
	pid_t tid;                      /* the thread that read it */
	int bus;                        /* 1 if SIGBUS ended the read */
	char value;                     /* what it read, if not */
	double seconds;                 /* how long the read took */
};

static __thread sigjmp_buf t_bus_jmp;
static __thread volatile int t_bus_armed;
static volatile pid_t t_bus_tid;
static volatile uintptr_t t_bus_addr;
static volatile int t_bus_code, t_bus_count;

static void t_on_sigbus(int sig, siginfo_t *si, void *uc)
{
	(void)sig;
	(void)uc;
	t_bus_tid = (pid_t)syscall(SYS_gettid);
	t_bus_addr = (uintptr_t)si->si_addr;
	t_bus_code = si->si_code;
	t_bus_count++;
	if (t_bus_armed)
		siglongjmp(t_bus_jmp, 1);
	_exit(99);
}

static inline void t_bus_catch(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = t_on_sigbus;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	REQUIRE(sigaction(SIGBUS, &sa, NULL) == 0);
}

/* 1 if SIGBUS is still ours (a library loaded since may have taken it). */
static inline int t_bus_caught(void)
{
	struct sigaction sa;
	REQUIRE(sigaction(SIGBUS, NULL, &sa) == 0);
	return (sa.sa_flags & SA_SIGINFO) && sa.sa_sigaction == t_on_sigbus;
}

static inline void *t_touch_here(void *arg)
{
	struct t_touch *t = arg;
	double t0 = t_now();
	t->tid = (pid_t)syscall(SYS_gettid);
	t_bus_armed = 1;
	if (sigsetjmp(t_bus_jmp, 1) == 0)
		t->value = *t->addr;
	else
		t->bus = 1;
	t_bus_armed = 0;
	t->seconds = t_now() - t0;
	return NULL;
}

static inline void t_touch(struct t_touch *t)
{
	pthread_t th;
	REQUIRE(pthread_create(&th, NULL, t_touch_here, t) == 0);
	pthread_join(th, NULL);
}

/* Read addr in a thread of its own: 1 if it got SIGBUS. */
static inline int t_touch_bus(const volatile void *addr)
{
	struct t_touch t = { .addr = addr };
	t_touch(&t);
	return t.bus;
}

#endif

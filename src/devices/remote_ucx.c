/* SPDX-License-Identifier: MIT */
/*
 * devices/remote_ucx.c - UCX loaded at run time (see remote_ucx.h).
 */
#include "remote_ucx.h"

#ifdef HETMM_HAVE_UCX
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
/* Larger mappings are not UCX's buffers: left alone. */
#define SETTLE_MAX (64UL << 20)

static struct ucx_api api;
static int load_rc;
static pthread_once_t once = PTHREAD_ONCE_INIT;

/* The signals libucs takes for its backtraces when it loads. */
static const int taken[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE };
#define NTAKEN (sizeof(taken) / sizeof(taken[0]))

static void load(void)
{
	struct sigaction saved[NTAKEN];
	void *h;

	/* UCX's shared memory transports detect a dead peer only when
	 * asked to, and without that UCX won't use them with endpoints that
	 * handle peer errors (ours): asked here, before UCX reads its
	 * environment, unless the user said otherwise. */
	if (!getenv("UCX_POSIX_ERROR_HANDLING") &&
	    !getenv("UCX_SYSV_ERROR_HANDLING")) {
		setenv("UCX_POSIX_ERROR_HANDLING", "y", 0);
		setenv("UCX_SYSV_ERROR_HANDLING", "y", 0);
		/* Nor warn that a TCP-only run leaves them unused. */
		setenv("UCX_WARN_UNUSED_ENV_VARS", "n", 0);
	}
	/* UCX's memory hooks (libucm) patch the process's mmap, munmap
	 * and mremap to tell its registration cache of unmaps; with them,
	 * the application's mremap(MREMAP_FIXED) fails (UCX 1.13: NULL,
	 * ENOMEM).  Off, unless the user said otherwise: shared memory and
	 * TCP register nothing on this side, and over RDMA UCX then
	 * registers the buffers it sends from or reads into per transfer
	 * instead of caching them (slower there, still correct). */
	setenv("UCX_MEM_EVENTS", "n", 0);
	/* TCP's buffer pools made large at their first growth, which
	 * remote.c forces before it settles the maps (remote_ucx.h). */
	setenv("UCX_TCP_RX_BUFS_GROW", "64", 0);
	setenv("UCX_TCP_TX_BUFS_GROW", "256", 0);
	for (size_t i = 0; i < NTAKEN; i++)
		sigaction(taken[i], NULL, &saved[i]);
	h = dlopen("libucp.so.0", RTLD_NOW | RTLD_LOCAL);
	for (size_t i = 0; i < NTAKEN; i++)
		sigaction(taken[i], &saved[i], NULL);
	if (!h) {
		load_rc = -EOPNOTSUPP;
		return;
	}
#define SYM(name)                                                 \
	do {                                                      \
		*(void **)&api.name = dlsym(h, #name);            \
		if (!api.name) {                                  \
			load_rc = -EOPNOTSUPP;                    \
			return;                                   \
		}                                                 \
	} while (0)
	SYM(ucp_config_read);
	SYM(ucp_config_modify);
	SYM(ucp_config_release);
	SYM(ucp_init_version);
	SYM(ucp_cleanup);
	SYM(ucp_worker_create);
	SYM(ucp_worker_destroy);
	SYM(ucp_worker_progress);
	SYM(ucp_ep_create);
	SYM(ucp_ep_close_nbx);
	SYM(ucp_ep_rkey_unpack);
	SYM(ucp_rkey_destroy);
	SYM(ucp_rkey_ptr);
	SYM(ucp_put_nbx);
	SYM(ucp_get_nbx);
	SYM(ucp_ep_flush_nbx);
	SYM(ucp_request_check_status);
	SYM(ucp_request_free);
	SYM(ucs_status_string);
#undef SYM
	/* libucp stays loaded for the process's life: UCX does not unload
	 * cleanly, and a late completion must find its code. */
}

int ucx_load(const struct ucx_api **out)
{
	pthread_once(&once, load);
	if (load_rc)
		return load_rc;
	*out = &api;
	return 0;
}

int ucx_open(const struct ucx_api *u, ucp_context_h *ctx,
	     ucp_worker_h *worker)
{
	ucp_config_t *cfg;
	ucp_params_t params = {
		.field_mask = UCP_PARAM_FIELD_FEATURES,
		.features = UCP_FEATURE_RMA,
	};
	/* The device's lock serialises every call on the worker. */
	ucp_worker_params_t wp = {
		.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
		.thread_mode = UCS_THREAD_MODE_SERIALIZED,
	};

	if (u->ucp_config_read(NULL, NULL, &cfg) != UCS_OK)
		return -EOPNOTSUPP;
	ucs_status_t st = u->ucp_init_version(UCP_API_MAJOR, UCP_API_MINOR,
					      &params, cfg, ctx);
	u->ucp_config_release(cfg);
	if (st != UCS_OK)
		return -EOPNOTSUPP;
	if (u->ucp_worker_create(*ctx, &wp, worker) != UCS_OK) {
		u->ucp_cleanup(*ctx);
		return -ENOMEM;
	}
	return 0;
}
#endif

#ifdef HETMM_HAVE_UCX
/* The private anonymous writable mappings of the process. */
static int maps_read(struct ucx_maps *m)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[512];
	size_t cap = 0;

	m->span = NULL;
	m->n = 0;
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e, ino;
		char perms[5];
		int name = 0;
		if (sscanf(line, "%lx-%lx %4s %*s %*s %lu %n", &s, &e, perms,
			   &ino, &name) < 4)
			continue;
		if (strcmp(perms, "rw-p") || ino || line[name] == '[' ||
		    line[name] == '/')
			continue;
		if (m->n == cap) {
			cap = cap ? 2 * cap : 64;
			void *v = realloc(m->span, cap * sizeof(*m->span));
			if (!v) {
				fclose(f);
				free(m->span);
				m->span = NULL;
				return -ENOMEM;
			}
			m->span = v;
		}
		m->span[m->n][0] = s;
		m->span[m->n][1] = e;
		m->n++;
	}
	fclose(f);
	return 0;
}

int ucx_maps_before(struct ucx_maps *m)
{
	return maps_read(m);
}

static bool was_there(const struct ucx_maps *m, uintptr_t a)
{
	for (size_t i = 0; i < m->n; i++)
		if (a >= m->span[i][0] && a < m->span[i][1])
			return true;
	return false;
}

void ucx_maps_settle(struct ucx_maps *before)
{
	struct ucx_maps now;

	if (maps_read(&now) == 0) {
		const size_t ps = (size_t)sysconf(_SC_PAGESIZE);
		for (size_t i = 0; i < now.n; i++) {
			uintptr_t s = now.span[i][0], e = now.span[i][1];
			if (e - s > SETTLE_MAX)
				continue;
			/* The pages new since before, run by run. */
			for (uintptr_t a = s; a < e;) {
				uintptr_t b = a;
				while (b < e && !was_there(before, b))
					b += ps;
				if (b > a) {
					madvise((void *)a, b - a,
						MADV_POPULATE_WRITE);
				}
				a = b < e ? b + ps : e;
			}
		}
		free(now.span);
	}
	free(before->span);
	before->span = NULL;
}
#endif

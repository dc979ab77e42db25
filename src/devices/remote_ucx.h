/* SPDX-License-Identifier: MIT */
/*
 * devices/remote_ucx.h - UCX for the remote device, loaded at run time.
 *
 * libucp is opened with dlopen() the first time a remote device is made,
 * not linked: a program that never makes one neither needs UCX installed
 * nor gets what loading it does to a process.  (libucs installs handlers
 * for SIGSEGV, SIGBUS, SIGILL and SIGFPE when it loads, and its own
 * sigaction() refuses to let a program linked with it replace them: the
 * SIGBUS of hetmm's device-error path would print UCX's backtrace
 * instead.  Opened RTLD_LOCAL, nobody binds to that sigaction, and the
 * handlers the process had are put back once it is loaded.)
 */
#ifndef HETMM_REMOTE_UCX_H
#define HETMM_REMOTE_UCX_H

#ifdef HETMM_HAVE_UCX
#include <ucp/api/ucp.h>

#define UCX_FN(name) __typeof__(name) *name
struct ucx_api {
	UCX_FN(ucp_config_read);
	UCX_FN(ucp_config_modify);
	UCX_FN(ucp_config_release);
	UCX_FN(ucp_init_version);
	UCX_FN(ucp_cleanup);
	UCX_FN(ucp_worker_create);
	UCX_FN(ucp_worker_destroy);
	UCX_FN(ucp_worker_progress);
	UCX_FN(ucp_ep_create);
	UCX_FN(ucp_ep_close_nbx);
	UCX_FN(ucp_ep_rkey_unpack);
	UCX_FN(ucp_rkey_destroy);
	UCX_FN(ucp_rkey_ptr);
	UCX_FN(ucp_put_nbx);
	UCX_FN(ucp_get_nbx);
	UCX_FN(ucp_ep_flush_nbx);
	UCX_FN(ucp_request_check_status);
	UCX_FN(ucp_request_free);
	UCX_FN(ucs_status_string);
};
#undef UCX_FN

/* UCX, loaded once per process: 0 with *api, -EOPNOTSUPP if libucp (or a
 * symbol of it) is missing.  Thread safe. */
int ucx_load(const struct ucx_api **api);

/* A UCP context and a worker for RMA: 0, or -EOPNOTSUPP/-ENOMEM. */
int ucx_open(const struct ucx_api *u, ucp_context_h *ctx,
	     ucp_worker_h *worker);

/*
 * The memory UCX and the device's thread map for themselves, kept out of
 * reach of the context's fault handler.  hetmm registers whole mappings
 * with its userfaultfd, and the kernel may merge a buffer of UCX's into
 * a mapping of the program's next to it; a first touch of such a page by
 * the device's thread (TCP receives into UCX's buffers) would then wait
 * for the handler, while the handler waits for that thread's copy.  So
 * the private anonymous mappings made between ucx_maps_before() and
 * ucx_maps_settle() (the worker, the endpoints, the thread's stack and
 * malloc arena) are populated: a present page never faults, whatever
 * registration takes it in later.  (Not MADV_DONTFORK, which would keep
 * them from merging: glibc's fork handler walks every malloc arena in
 * the child.)  The device makes UCX fill its TCP buffer pools first (a
 * put and a get on every server, pools that grow by 64 receive and 256
 * send buffers at a time unless UCX_TCP_*_BUFS_GROW say otherwise);
 * buffers UCX maps later, growing its pools under heavier load, are not
 * covered: the core's handler would have to serve holes while it waits
 * for a driver's copies.
 */
struct ucx_maps {
	uintptr_t (*span)[2];
	size_t n;
};
int ucx_maps_before(struct ucx_maps *m);
void ucx_maps_settle(struct ucx_maps *m);
#endif

#endif

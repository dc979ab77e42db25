/* SPDX-License-Identifier: MIT */
/*
 * strerror.c - what an errno means coming from hetmm (the table in
 * hetmm.h, "Errors").  The C library's strerror() gives the kernel's
 * words, which say "No such file or directory" for hetmm's -ENOENT.
 */
#include <errno.h>

#include "hetmm.h"

#define HETMM_ERR_OTHER \
	"an error of the kernel's, passed through (see strerror)"

const char *hetmm_strerror(int err)
{
	switch (err < 0 ? -err : err) {
	case 0:
		return "success";
	case EINVAL:
		return "bad input: a NULL or stale handle, an empty, unaligned, "
		       "overflowing or unmapped range, unknown flags, or an "
		       "object of another context; nothing changed";
	case EFAULT:
		return "a page has no mapping, or not the access the call needs";
	case ENXIO:
		return "no such device memory: a frame or page of no live "
		       "pagemap, or a pagemap being hot-removed";
	case ENOENT:
		return "nothing to do: no page of the range could migrate, none "
		       "is on a device, or no device frame backs the address";
	case ENOMEM:
		return "the device has no free frame, or hetmm could not "
		       "allocate";
	case ENOSPC:
		return "no room: every frame-number section is in use, "
		       "device memory too small to hold its own metadata, or "
		       "a memory server full";
	case EBUSY:
		return "held or moving: pages pinned or claimed, a notifier "
		       "sequence moved (begin again), a managed pagemap, or a "
		       "range another userfaultfd holds";
	case EOPNOTSUPP:
		return "the memory type or the kernel can't do it";
	case EPERM:
		return "not permitted: a write to a read-only mapping, a pagemap "
		       "of another owner, or no permission to open a "
		       "userfaultfd";
	case ECHILD:
		return "an object of the parent process, used in a fork child";
	case EDEADLK:
		return "called where it would wait for itself (the fault "
		       "handler: a pagemap op or a notifier callback)";
	case EAGAIN:
		return "the pages kept changing under a device access; again";
	case EIO:
		return "the driver's copy failed, or one of its copies "
		       "timed out";
	case EREMOTEIO:
		return "peer-to-peer memory out of reach: not a peer, or a pin "
		       "without HETMM_FOLL_PCI_P2PDMA";
	case ENOSYS:
		return "the kernel has no userfaultfd";
	case EACCES:
		return "not admitted: a secret file others may read, or a "
		       "proof of the secret the other side refused";
	case EPROTO:
		return "a memory server or client broke the protocol";
	default:
		return HETMM_ERR_OTHER;
	}
}

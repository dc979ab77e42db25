/* SPDX-License-Identifier: MIT */
/*
 * trace.h - static probes (USDT) at hetmm's events, for perf and
 * bpftrace: provider "hetmm", one probe per event below.  Built with
 * systemtap's <sys/sdt.h> where it is (HETMM_HAVE_SDT, set by CMake): a
 * probe is one nop in the code and a note in the ELF file, which a tracer
 * turns into a breakpoint when it attaches; nothing else runs until then.
 * Without <sys/sdt.h> the probes compile to nothing.
 *
 *   fault (addr, flags)                 a userfaultfd fault reached the
 *                                       handler (flags: UFFD_PAGEFAULT_*)
 *   migrate_to_device (addr, npages, moved)
 *                                       a chunk of a migration committed
 *   migrate_to_system (addr, len, rc)   hetmm_migrate_to_system() returned
 *   evict (pgmap, want, evicted)        a full device evicted pages
 *   pin (addr, nr, flags, result)       a get/pin call returned (flags:
 *                                       HETMM_FOLL_*, | 0x100 for a pin,
 *                                       | 0x200 for a _fast variant)
 *   invalidate (start, end, why)        a notifier is told (enum
 *                                       hetmm_event)
 */
#ifndef HETMM_TRACE_H
#define HETMM_TRACE_H

#ifdef HETMM_HAVE_SDT
#include <sys/sdt.h>
#define TRACE2(name, a, b) DTRACE_PROBE2(hetmm, name, a, b)
#define TRACE3(name, a, b, c) DTRACE_PROBE3(hetmm, name, a, b, c)
#define TRACE4(name, a, b, c, d) DTRACE_PROBE4(hetmm, name, a, b, c, d)
#else
#define TRACE2(name, a, b) ((void)0)
#define TRACE3(name, a, b, c) ((void)0)
#define TRACE4(name, a, b, c, d) ((void)0)
#endif

/* The flags of the pin probe besides HETMM_FOLL_*. */
#define TRACE_PIN_PIN 0x100
#define TRACE_PIN_FAST 0x200

#endif /* HETMM_TRACE_H */

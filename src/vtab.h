/* SPDX-License-Identifier: MIT */
/*
 * vtab.h - a sparse table of 64-bit entries keyed by virtual page number.
 *
 * Four levels of 512 slots, like an x86-64 page table, so a lookup is four
 * dependent loads and no lock.  Nodes are allocated on first store and only
 * freed with the table; a zero entry means "nothing here".
 */
#ifndef HETMM_VTAB_H
#define HETMM_VTAB_H

#include <stdatomic.h>

#include "base.h"
#include "wordlock.h"

/* Nodes come from chunks mapped populated, between guard pages, never
 * from malloc: the fault handler stores entries, and a page it touched
 * for the first time in a malloc arena that the kernel merged into a
 * mapping registered whole would be a missing fault only the handler
 * itself could serve.  The pool's lock is a wordlock (wordlock.h): the
 * deputy takes it when a hole it fills needs a new node. */
struct vtab {
	_Atomic(void *) root;
	struct wordlock pool_lock;
	void *chunks;           /* list through each chunk's first node */
	char *next, *end;       /* the current chunk's unused nodes */
	void *spare;            /* nodes that lost a race, for reuse */
};

void vtab_init(struct vtab *t);
void vtab_destroy(struct vtab *t);
/* The slot for vpn, or NULL if absent and !create (or out of memory). */
_Atomic uint64_t *vtab_slot(struct vtab *t, uint64_t vpn, bool create);
uint64_t vtab_get(struct vtab *t, uint64_t vpn);

/* The slot after slot (that of vpn - 1): leaves are arrays, so only a
 * walk into the next leaf costs more than an increment. */
#define VTAB_LEAF_SLOTS 512
static inline _Atomic uint64_t *vtab_next(struct vtab *t,
					  _Atomic uint64_t *slot,
					  uint64_t vpn, bool create)
{
	if (slot && vpn % VTAB_LEAF_SLOTS)
		return slot + 1;
	return vtab_slot(t, vpn, create);
}
/* Call fn for each non-zero entry in [first, last); stop if it returns !0. */
int vtab_for_each(struct vtab *t, uint64_t first, uint64_t last,
		  int (*fn)(void *arg, uint64_t vpn, _Atomic uint64_t *slot),
		  void *arg);

#endif /* HETMM_VTAB_H */

/* SPDX-License-Identifier: MIT */
/*
 * vtab.c - sparse, lock-free-read table of 64-bit entries by page number.
 *
 * Readers walk four levels of atomic pointers.  A writer that finds a
 * missing node allocates one and installs it with compare-and-swap; the
 * loser of a race frees its copy.  Nodes live until vtab_destroy(), so a
 * reader never sees one freed under it.
 */
#include <errno.h>
#include <stdlib.h>

#include "vtab.h"

#define VTAB_BITS 9
#define VTAB_FANOUT (1u << VTAB_BITS)
_Static_assert(VTAB_FANOUT == VTAB_LEAF_SLOTS, "leaf size");
#define VTAB_LEVELS 4   /* 36 bits of page number: 48-bit addresses */

struct vtab_node {
	_Atomic(void *) slot[VTAB_FANOUT];
};

struct vtab_leaf {
	_Atomic uint64_t ent[VTAB_FANOUT];
};

static unsigned vtab_index(uint64_t vpn, int level)
{
	return (vpn >> (VTAB_BITS * (VTAB_LEVELS - 1 - level))) &
	       (VTAB_FANOUT - 1);
}

void vtab_init(struct vtab *t)
{
	atomic_init(&t->root, NULL);
}

static void vtab_free_level(void *p, int level)
{
	if (!p)
		return;
	if (level < VTAB_LEVELS - 1) {
		struct vtab_node *n = p;
		for (unsigned i = 0; i < VTAB_FANOUT; i++)
			vtab_free_level(atomic_load_explicit(&n->slot[i],
					memory_order_relaxed), level + 1);
	}
	free(p);
}

void vtab_destroy(struct vtab *t)
{
	vtab_free_level(atomic_exchange(&t->root, NULL), 0);
}

/* Load or, when asked, create the child behind *slot. */
static void *vtab_child(_Atomic(void *) *slot, bool create, size_t size)
{
	void *child = atomic_load_explicit(slot, memory_order_acquire);
	if (child || !create)
		return child;
	void *fresh = calloc(1, size);
	if (!fresh)
		return NULL;
	void *expected = NULL;
	if (atomic_compare_exchange_strong_explicit(slot, &expected, fresh,
			memory_order_acq_rel, memory_order_acquire))
		return fresh;
	free(fresh);
	return expected;
}

_Atomic uint64_t *vtab_slot(struct vtab *t, uint64_t vpn, bool create)
{
	if (vpn >> (VTAB_BITS * VTAB_LEVELS))
		return NULL;
	_Atomic(void *) *slot = &t->root;
	for (int level = 0; level < VTAB_LEVELS - 1; level++) {
		struct vtab_node *n = vtab_child(slot, create,
						 sizeof(struct vtab_node));
		if (!n)
			return NULL;
		slot = &n->slot[vtab_index(vpn, level)];
	}
	struct vtab_leaf *leaf = vtab_child(slot, create,
					    sizeof(struct vtab_leaf));
	if (!leaf)
		return NULL;
	return &leaf->ent[vtab_index(vpn, VTAB_LEVELS - 1)];
}

uint64_t vtab_get(struct vtab *t, uint64_t vpn)
{
	_Atomic uint64_t *slot = vtab_slot(t, vpn, false);
	return slot ? atomic_load_explicit(slot, memory_order_acquire) : 0;
}

static uint64_t level_span(int level)
{
	return 1ULL << (VTAB_BITS * (VTAB_LEVELS - 1 - level));
}

static int vtab_walk(void *p, int level, uint64_t base, uint64_t first,
		     uint64_t last,
		     int (*fn)(void *, uint64_t, _Atomic uint64_t *),
		     void *arg)
{
	uint64_t span = level_span(level);
	for (unsigned i = 0; i < VTAB_FANOUT; i++) {
		uint64_t lo = base + i * span, hi = lo + span;
		if (hi <= first)
			continue;
		if (lo >= last)
			break;
		if (level == VTAB_LEVELS - 1) {
			struct vtab_leaf *leaf = p;
			if (atomic_load_explicit(&leaf->ent[i],
						 memory_order_acquire)) {
				int rc = fn(arg, lo, &leaf->ent[i]);
				if (rc)
					return rc;
			}
			continue;
		}
		struct vtab_node *n = p;
		void *child = atomic_load_explicit(&n->slot[i],
						   memory_order_acquire);
		if (!child)
			continue;
		int rc = vtab_walk(child, level + 1, lo, first, last, fn, arg);
		if (rc)
			return rc;
	}
	return 0;
}

int vtab_for_each(struct vtab *t, uint64_t first, uint64_t last,
		  int (*fn)(void *arg, uint64_t vpn, _Atomic uint64_t *slot),
		  void *arg)
{
	void *root = atomic_load_explicit(&t->root, memory_order_acquire);
	if (!root || first >= last)
		return 0;
	return vtab_walk(root, 0, 0, first, last, fn, arg);
}

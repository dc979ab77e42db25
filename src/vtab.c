/* SPDX-License-Identifier: MIT */
/*
 * vtab.c - sparse, lock-free-read table of 64-bit entries by page number.
 *
 * Readers walk four levels of atomic pointers.  A writer that finds a
 * missing node takes one from the table's pool and installs it with
 * compare-and-swap; the loser of a race gives its copy back.  Nodes live
 * until vtab_destroy(), so a reader never sees one freed under it.
 */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>

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

#define VTAB_NODE 4096u         /* a node and a leaf: 512 slots of 8 bytes */
#define VTAB_CHUNK_NODES 16u    /* the first holds the chunk list's link */
_Static_assert(VTAB_FANOUT * sizeof(void *) == VTAB_NODE, "node size");

void vtab_init(struct vtab *t)
{
	atomic_init(&t->root, NULL);
	atomic_init(&t->pool_lock.word, 0);
	t->chunks = t->spare = NULL;
	t->next = t->end = NULL;
}

#define CHUNK_LEN ((size_t)VTAB_CHUNK_NODES * VTAB_NODE)

/*
 * A chunk of nodes, every page present, between two PROT_NONE guard
 * pages: a mapping of its own that the kernel never merges with the
 * program's, so no registration of a whole program mapping and no
 * migration that overruns one takes hetmm's table with it.  NULL when
 * memory is out.
 */
static char *chunk_map(void)
{
	size_t guard = PAGE_SIZE;
	char *r = mmap(NULL, CHUNK_LEN + 2 * guard, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (r == MAP_FAILED)
		return NULL;
	char *c = mmap(r + guard, CHUNK_LEN, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_POPULATE,
		       -1, 0);
	if (c == MAP_FAILED) {
		munmap(r, CHUNK_LEN + 2 * guard);
		return NULL;
	}
	return c;
}

static void chunk_unmap(char *c)
{
	munmap(c - PAGE_SIZE, CHUNK_LEN + 2 * PAGE_SIZE);
}

/* A zeroed node, NULL when memory is out. */
static void *node_alloc(struct vtab *t)
{
	void *n = NULL;
	wordlock_lock(&t->pool_lock);
	if (t->spare) {
		n = t->spare;
		t->spare = *(void **)n;
		memset(n, 0, VTAB_NODE);
	} else {
		if (t->next == t->end) {
			char *c = chunk_map();
			if (c) {
				*(void **)c = t->chunks;
				t->chunks = c;
				t->next = c + VTAB_NODE;
				t->end = c + CHUNK_LEN;
			}
		}
		if (t->next != t->end) {
			n = t->next;
			t->next += VTAB_NODE;
		}
	}
	wordlock_unlock(&t->pool_lock);
	return n;
}

static void node_give_back(struct vtab *t, void *n)
{
	wordlock_lock(&t->pool_lock);
	*(void **)n = t->spare;
	t->spare = n;
	wordlock_unlock(&t->pool_lock);
}

void vtab_destroy(struct vtab *t)
{
	atomic_store(&t->root, NULL);
	while (t->chunks) {
		char *c = t->chunks;
		t->chunks = *(void **)c;
		chunk_unmap(c);
	}
	t->next = t->end = NULL;
	t->spare = NULL;
}

/* Load or, when asked, create the child behind *slot. */
static void *vtab_child(struct vtab *t, _Atomic(void *) *slot, bool create)
{
	void *child = atomic_load_explicit(slot, memory_order_acquire);
	if (child || !create)
		return child;
	void *fresh = node_alloc(t);
	if (!fresh)
		return NULL;
	void *expected = NULL;
	if (atomic_compare_exchange_strong_explicit(slot, &expected, fresh,
			memory_order_acq_rel, memory_order_acquire))
		return fresh;
	node_give_back(t, fresh);
	return expected;
}

_Atomic uint64_t *vtab_slot(struct vtab *t, uint64_t vpn, bool create)
{
	if (vpn >> (VTAB_BITS * VTAB_LEVELS))
		return NULL;
	_Atomic(void *) *slot = &t->root;
	for (int level = 0; level < VTAB_LEVELS - 1; level++) {
		struct vtab_node *n = vtab_child(t, slot, create);
		if (!n)
			return NULL;
		slot = &n->slot[vtab_index(vpn, level)];
	}
	struct vtab_leaf *leaf = vtab_child(t, slot, create);
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

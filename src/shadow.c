/* SPDX-License-Identifier: MIT */
/*
 * shadow.c - the shadow entries' changes: claims, releases and holds.
 *
 * A page is claimed by compare-and-swap, except in runs.  A CAS costs about
 * 6 ns, as much as a fifteenth of moving the page back, so a run is claimed
 * a leaf of the table (512 entries) at a time with plain loads and stores
 * instead, while the batch holds CLAIM_BATCH in the leaf's claim word.
 * Every other claim of a device page is a compare-and-swap that counts
 * itself in the same word while it runs (shadow_claim): it waits for a
 * batch to finish, and a batch waits for the ones under way before it
 * looks at an entry.  So no entry a batch read as unclaimed can be claimed
 * before its store: the store is as good as the CAS.  Writes to claimed
 * entries (GONE, releases) need no CAS, and no batch touches those.
 */
#include <errno.h>
#include <sched.h>

#include "shadow.h"

#define CLAIM_BATCH 1u
#define CLAIM_ONE 2u
#define CLAIM_BATCH_MIN 16   /* pages; fewer are claimed one by one */

#define PIN_BIAS (1ULL << 24)
/* Counts stay below every flag and frame-number flag bit. */
#define HOLD_LIMIT (1ULL << 56)

void shadow_init(struct shadow *sh)
{
	vtab_init(&sh->tab);
	for (unsigned i = 0; i < CLAIM_WORDS; i++)
		atomic_init(&sh->claim_words[i], 0);
}

void shadow_destroy(struct shadow *sh)
{
	vtab_destroy(&sh->tab);
}

void shadow_store(struct shadow *sh, uint64_t vpn, uint64_t e)
{
	atomic_store_explicit(shadow_slot(sh, vpn, false), e,
			      memory_order_release);
}

void shadow_store_run(struct shadow *sh, uint64_t vpn, size_t run,
		      uint64_t e)
{
	_Atomic uint64_t *slot = NULL;
	for (size_t k = 0; k < run; k++) {
		slot = shadow_next(sh, slot, vpn + k, false);
		atomic_store_explicit(slot, e, memory_order_release);
	}
}

/* ------------------------------------------------------------------------
 * Claims
 */

static _Atomic uint32_t *claim_word(struct shadow *sh, uint64_t vpn)
{
	return &sh->claim_words[(vpn / VTAB_LEAF_SLOTS) % CLAIM_WORDS];
}

bool shadow_claim(struct shadow *sh, uint64_t vpn, _Atomic uint64_t *slot,
		  uint64_t *expected, uint64_t desired)
{
	_Atomic uint32_t *w = claim_word(sh, vpn);
	while (atomic_fetch_add(w, CLAIM_ONE) & CLAIM_BATCH) {
		atomic_fetch_sub(w, CLAIM_ONE);
		while (atomic_load_explicit(w, memory_order_acquire) &
		       CLAIM_BATCH)
			sched_yield();   /* a batch: a few hundred loads */
	}
	bool ok = atomic_compare_exchange_strong(slot, expected, desired);
	atomic_fetch_sub_explicit(w, CLAIM_ONE, memory_order_release);
	return ok;
}

/*
 * Claim up to n device pages from vpn, all in vpn's leaf, as a batch;
 * stops at the first page it can't take with a plain store (claimed,
 * not on a device, coherent: a hold on a coherent page needs the CAS).
 * 0 if another batch has the word.
 */
static size_t claim_batch(struct shadow *sh, uint64_t vpn, size_t n,
			  uint64_t *claims)
{
	_Atomic uint32_t *w = claim_word(sh, vpn);
	if (atomic_fetch_or(w, CLAIM_BATCH) & CLAIM_BATCH)
		return 0;
	while (atomic_load_explicit(w, memory_order_acquire) != CLAIM_BATCH)
		sched_yield();   /* a CAS claim finishing */
	_Atomic uint64_t *slot = shadow_slot(sh, vpn, false);
	size_t i = 0;
	for (; slot && i < n; i++, slot++) {
		uint64_t e = atomic_load_explicit(slot, memory_order_relaxed);
		if (!shadow_claimable(e) || shadow_is_coherent(e))
			break;
		atomic_store_explicit(slot, shadow_busy(e),
				      memory_order_relaxed);
		claims[i] = shadow_busy(e);
	}
	/* The claims are seen before anything read after them, as after a
	 * CAS: the exclusive-access marking relies on that (excl_mark()
	 * looks at the entry from the other side). */
	atomic_thread_fence(memory_order_seq_cst);
	atomic_fetch_and_explicit(w, ~CLAIM_BATCH, memory_order_release);
	return i;
}

bool claim_device_page(struct shadow *sh, uint64_t vpn,
		       _Atomic uint64_t *slot, uint64_t e)
{
	if (!shadow_claim(sh, vpn, slot, &e, shadow_busy(e)))
		return false;
	/* A coherent page held in place stays: a hold raises its count,
	 * then looks at the word; we set the word, then look at the count.
	 * One of the two sees the other. */
	if (unlikely(shadow_coherent_held(e))) {
		atomic_store(slot, e);
		return false;
	}
	return true;
}

static bool claim_one(struct shadow *sh, uint64_t vpn, uint64_t *claim)
{
	_Atomic uint64_t *slot = shadow_slot(sh, vpn, false);
	if (!slot)
		return false;
	uint64_t e = atomic_load_explicit(slot, memory_order_acquire);
	if (!shadow_claimable(e) || !claim_device_page(sh, vpn, slot, e))
		return false;
	*claim = shadow_busy(e);
	return true;
}

size_t claim_device_run(struct shadow *sh, uint64_t vpn, size_t n,
			uint64_t *claims)
{
	size_t i = 0;
	while (i < n) {
		size_t leaf_left = VTAB_LEAF_SLOTS - (vpn + i) % VTAB_LEAF_SLOTS;
		size_t want = MIN(n - i, leaf_left);
		size_t got = want >= CLAIM_BATCH_MIN ?
			     claim_batch(sh, vpn + i, want, claims + i) : 0;
		/* What the batch left of the leaf (a short run, a coherent
		 * page, a word another batch holds): one page at a time. */
		for (i += got; got < want; got++, i++)
			if (!claim_one(sh, vpn + i, &claims[i]))
				return i;
	}
	return i;
}

bool claim_system_page(_Atomic uint64_t *slot, uint64_t *e)
{
	for (int spins = 0; spins < SHADOW_FILLING_SPINS; spins++) {
		*e = 0;
		if (atomic_compare_exchange_strong(slot, e, shadow_filling()))
			return true;
		if (!shadow_is_filling(*e))
			return false;
		sched_yield();
	}
	return false;
}

/* The word of a claim once no carry of it is under way. */
static uint64_t claim_settled(_Atomic uint64_t *slot, uint64_t claim)
{
	uint64_t v = atomic_load_explicit(slot, memory_order_acquire);
	while (v == (claim | SHADOW_MOVED_)) {
		sched_yield();   /* the handler, between two stores */
		v = atomic_load_explicit(slot, memory_order_acquire);
	}
	return v;
}

enum shadow_let_go shadow_claim_at(struct shadow *sh, uint64_t vpn,
				   uint64_t claim)
{
	uint64_t v = claim_settled(shadow_slot(sh, vpn, false), claim);
	if (v == claim)
		return LET_GO_DONE;
	return v == (claim | SHADOW_GONE_) ? LET_GO_GONE : LET_GO_MOVED;
}

enum shadow_let_go shadow_try_release(struct shadow *sh, uint64_t vpn,
				      uint64_t claim, uint64_t e)
{
	_Atomic uint64_t *slot = shadow_slot(sh, vpn, false);
	for (;;) {
		uint64_t v = claim;
		if (atomic_compare_exchange_strong(slot, &v, e))
			return LET_GO_DONE;
		v = claim_settled(slot, claim);
		if (v == claim)
			continue;   /* a carry that gave up */
		return v == (claim | SHADOW_GONE_) ? LET_GO_GONE
						   : LET_GO_MOVED;
	}
}

enum shadow_let_go shadow_release(struct shadow *sh, uint64_t vpn,
				  uint64_t claim, uint64_t e)
{
	enum shadow_let_go st = shadow_try_release(sh, vpn, claim, e);
	/* Only the claimer clears a claim marked GONE. */
	if (st == LET_GO_GONE)
		atomic_store_explicit(shadow_slot(sh, vpn, false), 0,
				      memory_order_release);
	return st;
}

bool shadow_publish_gone(struct shadow *sh, uint64_t vpn, uint64_t claim,
			 uint64_t e)
{
	uint64_t v = claim | SHADOW_GONE_;
	return atomic_compare_exchange_strong(shadow_slot(sh, vpn, false), &v,
					      e);
}

bool shadow_carry_begin(_Atomic uint64_t *from, uint64_t claim,
			_Atomic uint64_t *to)
{
	uint64_t v = claim;
	if (!atomic_compare_exchange_strong(from, &v, claim | SHADOW_MOVED_))
		return false;
	v = 0;
	if (atomic_compare_exchange_strong(to, &v, claim))
		return true;
	atomic_store_explicit(from, claim, memory_order_release);
	return false;
}

void shadow_carry_end(_Atomic uint64_t *from)
{
	atomic_store_explicit(from, 0, memory_order_release);
}

bool shadow_claim_to_drop(struct shadow *sh, uint64_t vpn,
			  _Atomic uint64_t *slot, bool mark_gone,
			  uint64_t *claim)
{
	uint64_t e = atomic_load(slot);
	while (e & (SHADOW_DEVICE_ | SHADOW_BUSY_)) {
		if (shadow_is_orphan(e))
			return false;   /* unmapped already, kept for holds */
		if (e & SHADOW_BUSY_) {
			if (!mark_gone || (e & SHADOW_GONE_))
				return false;
			if (atomic_compare_exchange_weak(slot, &e,
							 e | SHADOW_GONE_))
				return false;
		} else if (shadow_claim(sh, vpn, slot, &e, shadow_busy(e))) {
			*claim = shadow_busy(e);
			return true;
		}
	}
	return false;
}

uint64_t shadow_settled(struct shadow *sh, uint64_t vpn, int *spins_left)
{
	uint64_t e = shadow_get(sh, vpn);
	while (shadow_is_filling(e) && *spins_left > 0) {
		--*spins_left;
		sched_yield();
		e = shadow_get(sh, vpn);
	}
	return e;
}

/* ------------------------------------------------------------------------
 * Holds
 */

int shadow_hold(_Atomic uint64_t *slot, bool pin)
{
	uint64_t unit = pin ? PIN_BIAS : 1;
	uint64_t e = atomic_load_explicit(slot, memory_order_acquire);
	for (;;) {
		if (!shadow_is_system(e))
			return -EAGAIN;
		if (pin ? e + PIN_BIAS >= HOLD_LIMIT
			: e % PIN_BIAS == PIN_BIAS - 1)
			return -ENOMEM;
		if (atomic_compare_exchange_weak_explicit(slot, &e, e + unit,
				memory_order_acq_rel, memory_order_acquire))
			return 0;
	}
}

int shadow_unhold(_Atomic uint64_t *slot, bool pin)
{
	uint64_t e = atomic_load_explicit(slot, memory_order_acquire);
	for (;;) {
		if (!shadow_is_system(e))
			return -EINVAL;
		uint64_t held = pin ? e / PIN_BIAS : e % PIN_BIAS;
		if (!held)
			return -EINVAL;
		if (atomic_compare_exchange_weak_explicit(slot, &e,
				e - (pin ? PIN_BIAS : 1),
				memory_order_acq_rel, memory_order_acquire))
			return 0;
	}
}

void shadow_hold_counts(uint64_t e, uint64_t *refs, uint64_t *pins)
{
	bool count = shadow_is_system(e);
	*refs = count ? e % PIN_BIAS : 0;
	*pins = count ? e / PIN_BIAS : 0;
}

bool shadow_ref_held(_Atomic uint64_t *slot, uint64_t *e)
{
	*e = atomic_load(slot);
	while (shadow_is_held(*e))
		if (atomic_compare_exchange_weak(slot, e, *e + 1))
			return true;
	return false;
}

void shadow_unref(_Atomic uint64_t *slot)
{
	atomic_fetch_sub(slot, 1);
}

/* SPDX-License-Identifier: MIT */
/*
 * shadow.h - hetmm's page table: one word per process page saying where the
 * page lives, and the protocol by which threads take pages in hand.
 *
 * The kernel keeps a device-private swap entry in the PTE; hetmm keeps this
 * instead, in a sparse table keyed by page number:
 *
 *   0                       system memory, unpinned, nobody migrating it
 *   DEVICE | pfn            on the device frame pfn
 *   BUSY [| DEVICE | pfn]   claimed by a migration or a fault in flight;
 *                           whoever set BUSY clears it and wakes waiters
 *   BUSY                    (bare) a system page claimed by a migration to
 *                           a device, or being filled: a hole, or a page
 *                           a fault brought back, whose thread may run
 *                           already (0 in a moment)
 *   BUSY | GONE [| ...]     claimed, and the process unmapped the page
 *                           meanwhile, or discarded it while a migration
 *                           to a device held it: the claimer must not
 *                           publish it as it is
 *   BUSY | MOVED | ...      for a moment, while the handler carries a
 *                           claimed device page to where mremap moved
 *                           its process page (shadow_carry_begin); then
 *                           the claim lives at the address its frame's
 *                           owner names, and this word is 0
 *   GONE | DEVICE | pfn     an orphan: a coherent page the process
 *                           unmapped while the pin API held it; the
 *                           frame stays the holders' until the last
 *                           release (the kernel keeps a pinned page)
 *   n (no flag bits)        system page with references or pins taken
 *                           by the pin API: n = refs + pins * PIN_BIAS
 *   FIXED | pfn             CPU-addressable device memory (FS_DAX,
 *                           GENERIC) mapped at this address by its driver:
 *                           never migrated; pins count in the metadata
 *
 * Like the kernel's swapops.h, the bits are private to this header: every
 * other file reads and builds entries through the helpers below, and
 * changes them only through shadow.c.
 */
#ifndef HETMM_SHADOW_H
#define HETMM_SHADOW_H

#include <stdatomic.h>

#include "base.h"
#include "pagemap.h"
#include "vtab.h"

/* Words that batch claims of device pages take: shadow.claim_words. */
#define CLAIM_WORDS 64

struct shadow {
	struct vtab tab;
	/* Batch claims of device pages (claim_device_run), one word per
	 * group of leaves: CLAIM_BATCH while a batch claims in the leaf,
	 * plus CLAIM_ONE per compare-and-swap claim under way. */
	_Atomic uint32_t claim_words[CLAIM_WORDS];
};

void shadow_init(struct shadow *sh);
void shadow_destroy(struct shadow *sh);

/* ------------------------------------------------------------------------
 * The encoding
 */
#define SHADOW_DEVICE_ (1ULL << 63)
#define SHADOW_BUSY_ (1ULL << 62)
#define SHADOW_FIXED_ (1ULL << 61)
#define SHADOW_GONE_ (1ULL << 60)
#define SHADOW_MOVED_ (1ULL << 59)
#define SHADOW_FLAGS_ (SHADOW_DEVICE_ | SHADOW_BUSY_ | SHADOW_FIXED_ | \
		       SHADOW_GONE_ | SHADOW_MOVED_)
#define SHADOW_PFN_MASK_ ((1ULL << 56) - 1)

static inline uint64_t shadow_pfn(uint64_t e)
{
	return e & SHADOW_PFN_MASK_;
}

/* The entry of a page on device frame pfn, and of a fixed page. */
static inline uint64_t shadow_device(uint64_t pfn)
{
	return SHADOW_DEVICE_ | pfn;
}

static inline uint64_t shadow_fixed(uint64_t pfn)
{
	return SHADOW_FIXED_ | pfn;
}

/* A device entry (claimed or not). */
static inline bool shadow_on_device(uint64_t e)
{
	return e & SHADOW_DEVICE_;
}

/* Claimed: someone holds the page and will wake its waiters. */
static inline bool shadow_is_busy(uint64_t e)
{
	return e & SHADOW_BUSY_;
}

/* A bare claim: a system page being claimed or filled. */
static inline bool shadow_is_filling(uint64_t e)
{
	return e == SHADOW_BUSY_;
}

static inline bool shadow_is_fixed(uint64_t e)
{
	return e & SHADOW_FIXED_;
}

/* A system page as far as hetmm knows: 0 or holds of the pin API. */
static inline bool shadow_is_system(uint64_t e)
{
	return !(e & SHADOW_FLAGS_);
}

/* A system page with references or pins of the pin API. */
static inline bool shadow_is_held(uint64_t e)
{
	return e && shadow_is_system(e);
}

/* On a device, and nobody holds it: a page a claim may take. */
static inline bool shadow_claimable(uint64_t e)
{
	return (e & (SHADOW_DEVICE_ | SHADOW_BUSY_ | SHADOW_GONE_)) ==
	       SHADOW_DEVICE_;
}

/* A claimed device page (not a bare claim, not one marked GONE): one that
 * mremap may have to carry along (shadow_carry_begin). */
static inline bool shadow_claimed_device(uint64_t e)
{
	return (e & (SHADOW_DEVICE_ | SHADOW_BUSY_ | SHADOW_GONE_ |
		     SHADOW_MOVED_)) == (SHADOW_DEVICE_ | SHADOW_BUSY_);
}

/* The orphan of the claimed coherent entry claim (see the table), and
 * whether e is one. */
static inline uint64_t shadow_orphan(uint64_t claim)
{
	return (claim & ~SHADOW_BUSY_) | SHADOW_GONE_;
}

static inline bool shadow_is_orphan(uint64_t e)
{
	return (e & (SHADOW_DEVICE_ | SHADOW_BUSY_ | SHADOW_GONE_)) ==
	       (SHADOW_DEVICE_ | SHADOW_GONE_);
}

/* The orphan of frame pfn at slot is gone (its frame freed): 0 again,
 * unless the word is something else by now. */
static inline void shadow_forget_orphan(_Atomic uint64_t *slot, uint64_t pfn)
{
	uint64_t e = SHADOW_DEVICE_ | SHADOW_GONE_ | pfn;
	atomic_compare_exchange_strong(slot, &e, 0);
}

/* e claimed, and the claim let go of. */
static inline uint64_t shadow_busy(uint64_t e)
{
	return e | SHADOW_BUSY_;
}

static inline uint64_t shadow_unbusy(uint64_t e)
{
	return e & ~SHADOW_BUSY_;
}

/* The bare claim of a system page (see the table above). */
static inline uint64_t shadow_filling(void)
{
	return SHADOW_BUSY_;
}

/* Is e a device entry of a coherent pagemap?  Any entry; inline, as every
 * claim of a device page asks. */
static inline bool shadow_is_coherent(uint64_t e)
{
	return shadow_on_device(e) &&
	       pagemap_section_type(shadow_pfn(e)) ==
	       HETMM_MEMORY_DEVICE_COHERENT;
}

/* A coherent page that carries references or pins (held in place). */
static inline bool shadow_coherent_held(uint64_t e)
{
	return shadow_is_coherent(e) && coherent_page_held(shadow_pfn(e));
}

/* ------------------------------------------------------------------------
 * The table
 */
static inline _Atomic uint64_t *shadow_slot(struct shadow *sh, uint64_t vpn,
					    bool create)
{
	return vtab_slot(&sh->tab, vpn, create);
}

static inline _Atomic uint64_t *shadow_next(struct shadow *sh,
					    _Atomic uint64_t *slot,
					    uint64_t vpn, bool create)
{
	return vtab_next(&sh->tab, slot, vpn, create);
}

static inline uint64_t shadow_get(struct shadow *sh, uint64_t vpn)
{
	return vtab_get(&sh->tab, vpn);
}

/* fn for each non-zero entry of [first, last); stops if it returns !0. */
static inline int shadow_for_each(struct shadow *sh, uint64_t first,
		uint64_t last,
		int (*fn)(void *arg, uint64_t vpn, _Atomic uint64_t *slot),
		void *arg)
{
	return vtab_for_each(&sh->tab, first, last, fn, arg);
}

/* Set the entry of vpn (whose slot exists) to e, and of a run of them. */
void shadow_store(struct shadow *sh, uint64_t vpn, uint64_t e);
void shadow_store_run(struct shadow *sh, uint64_t vpn, size_t run,
		      uint64_t e);

/* ------------------------------------------------------------------------
 * Claims
 */

/*
 * Every compare-and-swap that claims a device page (its expected value
 * has DEVICE, not BUSY) goes through here, for claim_device_run's
 * batches: it is atomic_compare_exchange_strong(slot, expected,
 * desired), made while no batch claims pages of vpn's leaf.
 */
bool shadow_claim(struct shadow *sh, uint64_t vpn, _Atomic uint64_t *slot,
		  uint64_t *expected, uint64_t desired);
/* Claim the device page vpn whose entry is e (DEVICE, not BUSY): false
 * if the entry changed, or if it is a coherent page held in place. */
bool claim_device_page(struct shadow *sh, uint64_t vpn,
		       _Atomic uint64_t *slot, uint64_t e);
/* Claim up to n consecutive device-resident pages from vpn; returns how
 * many, their entries as claimed (e | BUSY) in claims. */
size_t claim_device_run(struct shadow *sh, uint64_t vpn, size_t n,
			uint64_t *claims);
/* Claim the system page of slot (0 -> bare BUSY), waiting a little for a
 * page being filled; false with the entry found in *e otherwise. */
bool claim_system_page(_Atomic uint64_t *slot, uint64_t *e);
/* Where a claim is when its claimer lets go of it. */
enum shadow_let_go {
	LET_GO_DONE,      /* here: e published */
	LET_GO_GONE,      /* the process unmapped the page (or discarded
			   * it, under a migration): entry cleared */
	LET_GO_MOVED,     /* mremap carried the claim to the address its
			   * frame's owner names: this word, untouched, is
			   * someone else's now; let go of it there */
};
/*
 * Let go of the claim (an entry with BUSY) on vpn by publishing e, unless
 * the process unmapped the page meanwhile (or discarded it, under a
 * migration) and the claim is marked GONE (the entry is cleared) or mremap carried it elsewhere (see the enum).  A
 * carry under way is waited out: the handler finishes it at once.
 */
enum shadow_let_go shadow_release(struct shadow *sh, uint64_t vpn,
				  uint64_t claim, uint64_t e);
/* The same look without letting go: DONE if the claim is still at vpn. */
enum shadow_let_go shadow_claim_at(struct shadow *sh, uint64_t vpn,
				   uint64_t claim);
/* shadow_release, but a claim marked GONE is left so (LET_GO_GONE), for
 * its claimer to look at the page first (a coherent one still mapped was
 * discarded, not unmapped: migrate.c). */
enum shadow_let_go shadow_try_release(struct shadow *sh, uint64_t vpn,
				      uint64_t claim, uint64_t e);
/* Publish e over the claimer's claim marked GONE, which nobody else
 * changes; false if the entry is not that. */
bool shadow_publish_gone(struct shadow *sh, uint64_t vpn, uint64_t claim,
			 uint64_t e);
/*
 * mremap moved the process page of the claimed device entry claim from
 * *from to the address of *to (the handler, lifecycle.c): mark the claim
 * MOVED at from, and put it at to, which must be 0.  False, with nothing
 * changed, if either word is not as expected.  Between begin and end the
 * caller makes the frame's owner name the new address; end clears from,
 * and the claim is to's.
 */
bool shadow_carry_begin(_Atomic uint64_t *from, uint64_t claim,
			_Atomic uint64_t *to);
void shadow_carry_end(_Atomic uint64_t *from);
/*
 * Claim a device page whose process page is gone (munmap) or discarded
 * (madvise), for dropping: returns true with the claimed entry in
 * *claim.  A page someone else holds is theirs to finish; with mark_gone
 * (munmap) it is marked GONE, so that its claimer drops it rather than
 * publish it.  Returns false for it, and for any other entry.
 */
bool shadow_claim_to_drop(struct shadow *sh, uint64_t vpn,
			  _Atomic uint64_t *slot, bool mark_gone,
			  uint64_t *claim);

/*
 * The entry of vpn once no fill is under way: a bare BUSY entry is a
 * system page in a moment (a hole being filled, a page a fault brought
 * back), so callers wait a little for it (yielding: the filler may be
 * waiting for this CPU) before they call it busy.  A migration to a
 * device claims system pages with bare BUSY too, and holds them far
 * longer: *spins_left is the caller's budget of yields for all its pages,
 * so a range such a migration holds costs it one page's wait, not one per
 * page.  Start the budget at SHADOW_FILLING_SPINS.
 */
#define SHADOW_FILLING_SPINS 64
uint64_t shadow_settled(struct shadow *sh, uint64_t vpn, int *spins_left);

/* ------------------------------------------------------------------------
 * Holds of the pin API on system pages
 *
 * A word with no flag bits is a count, references in the low bits and
 * pins above PIN_BIAS (the kernel counts pins in the refcount the same
 * way, GUP_PIN_COUNTING_BIAS).  A held word is never 0, so a migration's
 * claim (0 -> BUSY) fails on it and the page is skipped as pinned; a
 * claimed word or a device word is never a count, so a hold can't start
 * while a migration or fault owns the page.
 */

/* Take a reference (pin false) or a pin: -EAGAIN if the word is not a
 * count (device, busy, fixed), -ENOMEM if the count is full. */
int shadow_hold(_Atomic uint64_t *slot, bool pin);
/* Drop one: -EINVAL if the word holds none of the kind. */
int shadow_unhold(_Atomic uint64_t *slot, bool pin);
/* The references and pins a word counts (0 for any other word). */
void shadow_hold_counts(uint64_t e, uint64_t *refs, uint64_t *pins);
/* A reference of hetmm's own on a held word, taken only while it is one
 * (false otherwise, with the word found in *e), and given back. */
bool shadow_ref_held(_Atomic uint64_t *slot, uint64_t *e);
void shadow_unref(_Atomic uint64_t *slot);

#endif /* HETMM_SHADOW_H */

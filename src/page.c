/* SPDX-License-Identifier: MIT */
/*
 * page.c - the kernel's page size and PMD (huge page) size, read once per
 * process at first use and never assumed: 4 KiB on x86-64, 4, 16 or
 * 64 KiB on arm64 (seeds 000, 002).  Every size in pages the library
 * derives is taken from here.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "base.h"

unsigned int page_shift_now;
unsigned int pmd_order_now;

static pthread_once_t page_once = PTHREAD_ONCE_INIT;

static bool power_of_two(uint64_t v)
{
	return v && !(v & (v - 1));
}

static unsigned int log2_of(uint64_t v)
{
	return (unsigned int)__builtin_ctzll(v);
}

/* The size the kernel maps a transparent huge page with, where it says
 * (THP built in); 0 where it does not. */
static uint64_t pmd_size_from_sysfs(void)
{
	int fd = open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size",
		      O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	char buf[32];
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	return strtoull(buf, NULL, 10);
}

static void page_read_once(void)
{
	long ps = sysconf(_SC_PAGESIZE);
	/* POSIX guarantees it; a kernel that gave anything else would
	 * break every mmap caller, so the fallback is the smallest size
	 * Linux has ever had. */
	uint64_t size = ps > 0 && power_of_two((uint64_t)ps) ? (uint64_t)ps
		: 4096;   /* pagecheck: never taken on Linux */
	unsigned int shift = log2_of(size);
	/* A page table page holds page_size / 8 entries, so a PMD maps
	 * page_size * page_size / 8 bytes: 2 MiB at 4 KiB pages, 32 MiB at
	 * 16 KiB, 512 MiB at 64 KiB.  Never less than a chunk: code that
	 * reads a PMD's worth of entries does it a chunk at a time. */
	uint64_t pmd = pmd_size_from_sysfs();
	if (!power_of_two(pmd) || pmd < size * CHUNK_PAGES)
		pmd = size * (size / 8);
	__atomic_store_n(&pmd_order_now, log2_of(pmd) - shift,
			 __ATOMIC_RELAXED);
	__atomic_store_n(&page_shift_now, shift, __ATOMIC_RELEASE);
}

unsigned int page_read(void)
{
	pthread_once(&page_once, page_read_once);
	return __atomic_load_n(&page_shift_now, __ATOMIC_ACQUIRE);
}

size_t hetmm_page_size(void)
{
	return PAGE_SIZE;
}

unsigned int hetmm_page_shift(void)
{
	return PAGE_SHIFT;
}

size_t hetmm_pmd_size(void)
{
	return PMD_SIZE;
}

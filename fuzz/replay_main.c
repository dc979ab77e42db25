/* SPDX-License-Identifier: MIT */
/*
 * replay_main.c - a fuzz target without libFuzzer: every input named on
 * the command line (a file, or each file of a directory, in name order)
 * run once, in one process, as libFuzzer replays a corpus.  A failed
 * check aborts (world.h), so the exit status is the verdict.
 *
 * `make test` builds the targets this way with the project's compiler
 * and flags (tests/CMakeLists.txt, fuzz_replay), so that they keep
 * building as the library changes, and replays the kept corpus and every
 * fixed finding: a finding that comes back fails the suite, not only the
 * next `make fuzz`.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static long replayed;

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (len == cap) {
			cap = cap ? 2 * cap : 4096;
			uint8_t *b = realloc(buf, cap);
			if (!b) {
				fclose(f);
				free(buf);
				return -1;
			}
			buf = b;
		}
		size_t got = fread(buf + len, 1, cap - len, f);
		if (!got)
			break;
		len += got;
	}
	int bad = ferror(f);
	fclose(f);
	if (bad) {
		fprintf(stderr, "replay: %s: read error\n", path);
		free(buf);
		return -1;
	}
	if (getenv("REPLAY_VERBOSE"))
		fprintf(stderr, "replay: %s\n", path);
	LLVMFuzzerTestOneInput(buf, len);
	free(buf);
	replayed++;
	return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int replay_path(const char *path)
{
	struct stat st;
	if (stat(path, &st)) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode))
		return replay_file(path);
	struct dirent **ents;
	int n = scandir(path, &ents, NULL, by_name);
	if (n < 0) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	int rc = 0;
	for (int i = 0; i < n; i++) {
		char sub[4096];
		if (!rc && ents[i]->d_name[0] != '.' &&
		    snprintf(sub, sizeof(sub), "%s/%s", path,
			     ents[i]->d_name) < (int)sizeof(sub) &&
		    !stat(sub, &st) && S_ISREG(st.st_mode))
			rc = replay_file(sub);
		free(ents[i]);
	}
	free(ents);
	return rc;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE|DIR...\n", argv[0]);
		return 2;
	}
	LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++)
		if (replay_path(argv[i]))
			return 1;
	printf("replayed %ld inputs\n", replayed);
	/* No input at all is a harness that found nothing to run. */
	return replayed ? 0 : 1;
}

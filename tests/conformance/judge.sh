#!/usr/bin/env bash
# judge.sh - the verdict on one run of the kernel's hmm-tests.
#
#   judge.sh [--ksft] [--cond NAME=yes|no]... KNOWN LOG RC
#       KNOWN  the known-failures file (its syntax is described at its top)
#       LOG    the harness's output
#       RC     the harness's exit status
#       --cond the value of each condition KNOWN names (conformance.sh
#              finds them by the probes)
#       --ksft the program reports with kselftest.h's plain functions
#              (gup_longterm), not its harness: each result line is
#              named by the "# [RUN] WHAT" line before it, WHAT with each
#              run of characters other than letters, digits, "_" and "."
#              made one "_" ("R/W pin ... with memfd" is
#              R_W_pin_..._with_memfd), and one result follows each RUN
#   judge.sh --conditions KNOWN
#       the condition names KNOWN uses, one a line
#
# Exit 0 only when the harness ran to its end and its failures are exactly
# the expected ones:
#   - one plan line 1..N, then results "ok I NAME" / "not ok I NAME" (a
#     skipped test: "ok I # SKIP why", named by its RUN line; with --ksft
#     every result is named by its RUN line) numbered 1..N,
#   - one "# Totals: pass:P fail:F xfail:0 xpass:0 skip:S error:0" line
#     that agrees with those lines, P + F + S = N,
#   - the harness's exit status is its verdict: 0 when F = 0, else 1,
#   - every failed test is an expected failure, and every expected failure
#     failed (a listed test that passes means the list is stale).
# Anything else, a tool that fails included, is a failure (exit 1; 2 for
# bad arguments).  Scratch files go to a directory beside LOG, removed on
# exit.
set -Eeuo pipefail
export LC_ALL=C

say() { printf 'conformance: %s\n' "$*"; }
trap 'say "FAILED: judge.sh line $LINENO: $BASH_COMMAND failed"; exit 1' ERR
usage() {
	echo "usage: judge.sh [--ksft] [--cond NAME=yes|no]... KNOWN LOG RC" >&2
	echo "       judge.sh --conditions KNOWN" >&2
	exit 2
}

# The known-failures file, checked, as "NAME<tab>COND" lines (COND "-"
# when unconditional) on stdout.
entries() {
	awk '
	function complain(m) {
		printf "%s:%d: %s\n", FILENAME, FNR, m | "cat >&2"
		bad = 1
	}
	{ sub(/[ \t]+$/, ""); sub(/^[ \t]+/, "") }
	/^(#|$)/ { next }
	NF == 1 || (NF == 3 && $2 == "if") {
		cond = NF == 3 ? $3 : "-"
		if ($1 !~ /^[A-Za-z0-9_.]+$/ || (NF == 3 && cond !~ /^[a-z0-9-]+$/)) {
			complain("bad name in: " $0)
		} else if ($1 in seen) {
			complain($1 " listed twice")
		}
		seen[$1] = 1
		print $1 "\t" cond
		next
	}
	{ complain("neither NAME nor NAME if CONDITION: " $0) }
	END { exit bad }' "$1"
}

if [ "${1:-}" = --conditions ]; then
	[ $# -eq 2 ] || usage
	entries "$2" | awk -F '\t' '$2 != "-" && !seen[$2]++ { print $2 }'
	exit 0
fi

ksft=0
if [ "${1:-}" = --ksft ]; then ksft=1; shift; fi
conds=()
while [ $# -gt 0 ] && [ "$1" = --cond ]; do
	[ $# -ge 2 ] || usage
	case $2 in
	*=yes | *=no) conds+=("$2") ;;
	*) usage ;;
	esac
	shift 2
done
[ $# -eq 3 ] || usage
known=$1 log=$2 rc=$3
case $rc in '' | *[!0-9]*) usage ;; esac
[ -r "$known" ] || { say "cannot read $known"; exit 1; }
[ -r "$log" ] || { say "cannot read $log"; exit 1; }

tmp=$(mktemp -d "$(dirname "$log")/judge.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The results, "STATUS<tab>NAME" (pass, fail or skip) in $tmp/results, and
# the log's shape checked against its own plan and totals.
if ! awk -v rc="$rc" -v out="$tmp/results" -v ksft="$ksft" '
	function problem(m) { printf "conformance: harness log: %s\n", m; bad = 1 }
	BEGIN { printf "" > out }
	/^(ok|not ok) / && !ksft { print }
	/^# (Totals|PASSED|FAILED|Planned)/ { print }
	/^# +RUN +[^ ]+ \.\.\.$/ && !ksft { running = $3 }
	/^# \[RUN\] / && ksft {
		if (running != "")
			problem("no result for " running)
		running = substr($0, 9)
		gsub(/[^A-Za-z0-9_.]+/, "_", running)
		sub(/^_/, "", running)
		sub(/_$/, "", running)
	}
	/^1\.\.[0-9]+$/ { plans++; plan = substr($0, 4) + 0; next }
	/^(ok|not ok) [0-9]+( |$)/ {
		st = $1 == "ok" ? "pass" : "fail"
		num = st == "pass" ? $2 : $3
		name = st == "pass" ? $3 : $4
		skip = st == "pass" && name == "#" && $4 == "SKIP"
		if (skip)
			st = "skip"
		if (skip || ksft) {
			name = running
			running = ""
			if (name == "")
				problem("a result with no RUN line before it: " $0)
		} else if (name == "" || name == "#") {
			problem("unnamed result: " $0)
		}
		if (ksft)
			print (st == "fail" ? "not ok " : "ok ") num \
				(st == "skip" ? " # SKIP " : " ") name
		if (num != n + 1)
			problem("result " num " where " n + 1 " was due: " $0)
		if (name in seen)
			problem(name " reported twice")
		n++
		seen[name] = 1
		count[st]++
		print st "\t" name > out
		next
	}
	/^# Totals: / {
		totals++
		if ($0 !~ /^# Totals: pass:[0-9]+ fail:[0-9]+ xfail:[0-9]+ xpass:[0-9]+ skip:[0-9]+ error:[0-9]+$/)
			problem("unreadable totals: " $0)
		for (i = 3; i <= NF; i++) {
			split($i, kv, ":")
			tot[kv[1]] = kv[2] + 0
		}
	}
	END {
		close(out)
		if (ksft && running != "")
			problem("no result for " running)
		if (plans != 1)
			problem(plans + 0 " plan lines (1..N), not one")
		if (totals != 1)
			problem(totals + 0 " Totals lines, not one: the suite did not finish")
		if (bad)
			exit 1
		if (n != plan)
			problem(n " results for a plan of " plan " tests")
		if (tot["pass"] != count["pass"] + 0 || tot["fail"] != count["fail"] + 0 ||
		    tot["skip"] != count["skip"] + 0)
			problem("totals pass:" tot["pass"] " fail:" tot["fail"] " skip:" tot["skip"] \
				" but the results say pass:" count["pass"] + 0 " fail:" count["fail"] + 0 \
				" skip:" count["skip"] + 0)
		if (tot["xfail"] || tot["xpass"] || tot["error"])
			problem("xfail, xpass or error results, which this harness does not give")
		if (tot["pass"] + tot["fail"] + tot["skip"] != plan)
			problem("totals add up to " tot["pass"] + tot["fail"] + tot["skip"] " of " plan " tests")
		if (rc != (tot["fail"] ? 1 : 0))
			problem("exit status " rc " for " tot["fail"] " failed tests")
		if (plan == 0)
			problem("no tests")
		exit bad
	}' "$log"; then
	say "FAILED: the harness did not run to its end as it should (log: $log)"
	exit 1
fi

# The first report of each failed check (the harness's own lines).
awk '/^# [^ ]*\.c:[0-9]+:/ {
	sub(/^# ([^ ]*\/)?/, "")
	if (!seen[$0]++ && n++ < 40) print
}' "$log"

# The expected failures: the unconditional entries, and those whose
# condition holds; every condition must have been given a value.
if ! entries "$known" > "$tmp/entries"; then
	say "FAILED: $known is not well formed"
	exit 1
fi
if ! awk -F '\t' -v conds="${conds[*]+"${conds[*]}"}" -v out="$tmp/expected" '
	BEGIN {
		n = split(conds, c, " ")
		for (i = 1; i <= n; i++) { split(c[i], kv, "="); val[kv[1]] = kv[2] }
		printf "" > out
	}
	$2 == "-" || val[$2] == "yes" { print $1 > out; next }
	val[$2] == "no" { next }
	{ printf "conformance: no value for condition %s (of %s)\n", $2, $1; bad = 1 }
	END { close(out); exit bad }' "$tmp/entries"; then
	say "FAILED: conditions missing"
	exit 1
fi

awk -F '\t' '{ print $2 }' "$tmp/results" | sort > "$tmp/names"
awk -F '\t' '$1 == "fail" { print $2 }' "$tmp/results" | sort > "$tmp/failed"
awk -F '\t' '{ print $1 }' "$tmp/entries" | sort > "$tmp/listed"
sort -o "$tmp/expected" "$tmp/expected"
comm -23 "$tmp/listed" "$tmp/names" > "$tmp/unknown"
comm -23 "$tmp/failed" "$tmp/expected" > "$tmp/unexpected"
comm -13 "$tmp/failed" "$tmp/expected" > "$tmp/fixed"

# Each test of a list, with its entry and the entry's condition's value.
report() {
	awk -F '\t' -v what="$2" -v conds="${conds[*]+"${conds[*]}"}" '
		BEGIN {
			n = split(conds, cv, " ")
			for (i = 1; i <= n; i++) {
				split(cv[i], kv, "=")
				val[kv[1]] = kv[2] == "yes" ? "holds" : "does not hold"
			}
		}
		FILENAME == ARGV[1] { cond[$1] = $2; next }
		{
			c = cond[$1]
			if (c == "")
				how = ""
			else if (c == "-")
				how = " (listed)"
			else
				how = " (listed if " c ", which " val[c] " here)"
			printf "conformance: %s %s%s\n", what, $1, how
		}' "$tmp/entries" "$1"
}
report "$tmp/unknown" "not a test of the suite, yet in $known:"
report "$tmp/unexpected" "UNEXPECTED FAILURE"
report "$tmp/fixed" "expected to fail but did not:"

nfailed=$(awk 'END { print NR }' "$tmp/failed")
nexpected=$(awk 'END { print NR }' "$tmp/expected")
nlisted=$(awk 'END { print NR }' "$tmp/entries")
if [ -s "$tmp/unknown" ] || [ -s "$tmp/unexpected" ] || [ -s "$tmp/fixed" ]; then
	say "FAILED: the failures are not the expected ones ($known)"
	exit 1
fi
say "every test passed or is an expected failure: $nfailed failed," \
	"$nexpected expected of $nlisted listed in $known"

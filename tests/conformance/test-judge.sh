#!/usr/bin/env bash
# test-judge.sh DIR - judge.sh on canned harness logs (ctest conformance_judge)
#
# Made-up logs in the harness's format, in a scratch directory under DIR
# (removed on exit): a complete run whose failures are the expected ones
# must pass; a run cut short, totals that disagree with the results or the
# plan, an exit status that disagrees with the totals, an unexpected
# failure, an expected failure that passes (either way round for a
# conditional one), a malformed known-failures file, a condition with no
# value, and a tool that fails while printing the right output must all
# fail, each for its own reason (the message is checked too).
set -euo pipefail
export LC_ALL=C

judge="$(cd "$(dirname "$0")" && pwd)/judge.sh"
top=$(cd "${1:?usage: test-judge.sh DIR}" && pwd)
dir=$(mktemp -d "$top/conformance_judge.XXXXXX")
trap 'rm -rf "$dir"' EXIT
passed=0 failed=0

# case NAME WANT_STATUS MESSAGE -- JUDGE_ARGS...: run the judge, and check
# its exit status (0, or any failure: "fail") and that its output has the
# line fragment MESSAGE.
case_() {
	local name=$1 want=$2 msg=$3 st=0 found=0
	shift 4
	"$judge" "$@" > "$dir/$name.out" 2>&1 || st=$?
	grep -qF -- "$msg" "$dir/$name.out" || found=$?
	if [ "$found" -gt 1 ]; then
		echo "test-judge: grep failed on $dir/$name.out" >&2
		exit 1
	fi
	if { [ "$want" = 0 ] && [ "$st" -ne 0 ]; } ||
	   { [ "$want" = fail ] && [ "$st" -eq 0 ]; } || [ "$found" -ne 0 ]; then
		echo "FAIL $name: exit $st (want $want), message '$msg'" \
		     "$([ "$found" -eq 0 ] && echo found || echo missing); output:"
		sed 's/^/    /' "$dir/$name.out"
		failed=$((failed + 1))
	else
		echo "ok $name (exit $st)"
		passed=$((passed + 1))
	fi
}

cat > "$dir/known" <<'EOF'
# Made up for this test.
fx.a.always
fx.a.cond  if some-cond
EOF

# A complete run: always and cond fail, one passes, one is skipped.
cat > "$dir/good.log" <<'EOF'
TAP version 13
1..4
# Starting 4 tests from 1 test cases.
#  RUN           fx.a.one ...
#            OK  fx.a.one
ok 1 fx.a.one
#  RUN           fx.a.always ...
# fx.c:10:always:Expected 1 (1) == 2 (2)
#          FAIL  fx.a.always
not ok 2 fx.a.always
#  RUN           fx.a.cond ...
# fx.c:20:cond:Expected 3 (3) == 4 (4)
#          FAIL  fx.a.cond
not ok 3 fx.a.cond
#  RUN           fx.a.skipper ...
#      SKIP      not here
#            OK  fx.a.skipper
ok 4 # SKIP not here
# FAILED: 2 / 4 tests passed.
# Totals: pass:1 fail:2 xfail:0 xpass:0 skip:1 error:0
EOF
# A variant of good.log: sed expressions, then the name of the new log.
variant() {
	local name=$1
	shift
	sed "$@" "$dir/good.log" > "$dir/$name.log"
}

variant cond-passes -e 's/^not ok 3 /ok 3 /' \
	-e 's/pass:1 fail:2/pass:2 fail:1/'
variant no-totals -e '/^# Totals/d'
variant cut-short -e '/^#  RUN  *fx.a.cond/,/^# Totals/d'
variant totals-off -e 's/pass:1 fail:2/pass:2 fail:2/'
variant totals-vs-lines -e 's/pass:1 fail:2/pass:2 fail:1/'
variant short-of-plan -e 's/^1\.\.4$/1..5/'
variant no-plan -e '/^1\.\.4$/d'
variant two-plans -e 's/^1\.\.4$/1..4\n1..4/'
variant misnumbered -e 's/^not ok 3 /not ok 4 /'
variant twice -e 's/^not ok 3 fx.a.cond$/not ok 3 fx.a.always/'
variant unexpected -e 's/^ok 1 /not ok 1 /' \
	-e 's/pass:1 fail:2/pass:0 fail:3/'
variant always-passes -e 's/^not ok 2 /ok 2 /' \
	-e 's/pass:1 fail:2/pass:2 fail:1/'
variant xfail -e 's/xfail:0/xfail:1/'
: > "$dir/empty.log"

yes=(--cond some-cond=yes)
no=(--cond some-cond=no)
k="$dir/known"
L() { echo "$dir/$1.log"; }

case_ good 0 "every test passed or is an expected failure: 2 failed" -- \
	"${yes[@]}" "$k" "$(L good)" 1
case_ cond-passes 0 "every test passed or is an expected failure: 1 failed" -- \
	"${no[@]}" "$k" "$(L cond-passes)" 1
case_ no-totals fail "0 Totals lines, not one" -- \
	"${yes[@]}" "$k" "$(L no-totals)" 1
case_ cut-short fail "0 Totals lines, not one" -- \
	"${yes[@]}" "$k" "$(L cut-short)" 1
case_ totals-off fail "totals pass:2 fail:2 skip:1 but the results say pass:1 fail:2 skip:1" -- \
	"${yes[@]}" "$k" "$(L totals-off)" 1
case_ totals-vs-lines fail "but the results say pass:1 fail:2" -- \
	"${yes[@]}" "$k" "$(L totals-vs-lines)" 1
case_ short-of-plan fail "4 results for a plan of 5 tests" -- \
	"${yes[@]}" "$k" "$(L short-of-plan)" 1
case_ no-plan fail "0 plan lines" -- \
	"${yes[@]}" "$k" "$(L no-plan)" 1
case_ two-plans fail "2 plan lines" -- \
	"${yes[@]}" "$k" "$(L two-plans)" 1
case_ misnumbered fail "result 4 where 3 was due" -- \
	"${yes[@]}" "$k" "$(L misnumbered)" 1
case_ twice fail "fx.a.always reported twice" -- \
	"${yes[@]}" "$k" "$(L twice)" 1
case_ xfail fail "xfail, xpass or error results" -- \
	"${yes[@]}" "$k" "$(L xfail)" 1
case_ empty fail "0 plan lines" -- \
	"${yes[@]}" "$k" "$(L empty)" 0
case_ missing-log fail "cannot read" -- \
	"${yes[@]}" "$k" "$dir/no-such.log" 1
case_ rc-says-pass fail "exit status 0 for 2 failed tests" -- \
	"${yes[@]}" "$k" "$(L good)" 0
case_ rc-crashed fail "exit status 139 for 2 failed tests" -- \
	"${yes[@]}" "$k" "$(L good)" 139
case_ unexpected fail "UNEXPECTED FAILURE fx.a.one" -- \
	"${yes[@]}" "$k" "$(L unexpected)" 1
case_ always-passes fail "expected to fail but did not: fx.a.always (listed)" -- \
	"${yes[@]}" "$k" "$(L always-passes)" 1
case_ cond-fails-unless fail \
	"UNEXPECTED FAILURE fx.a.cond (listed if some-cond, which does not hold here)" -- \
	"${no[@]}" "$k" "$(L good)" 1
case_ cond-passes-if fail \
	"expected to fail but did not: fx.a.cond (listed if some-cond, which holds here)" -- \
	"${yes[@]}" "$k" "$(L cond-passes)" 1
case_ no-cond-value fail "no value for condition some-cond" -- \
	"$k" "$(L good)" 1

printf 'fx.a.always\nfx.a.cond when some-cond\n' > "$dir/known-syntax"
case_ known-syntax fail "neither NAME nor NAME if CONDITION" -- \
	"${yes[@]}" "$dir/known-syntax" "$(L good)" 1
printf 'fx.a.always\nfx.a.cond if ../some-cond\n' > "$dir/known-badcond"
case_ known-badcond fail "bad name in: fx.a.cond if ../some-cond" -- \
	"${yes[@]}" "$dir/known-badcond" "$(L good)" 1
printf 'fx.a.always\nfx.a.always\nfx.a.cond if some-cond\n' > "$dir/known-twice"
case_ known-twice fail "fx.a.always listed twice" -- \
	"${yes[@]}" "$dir/known-twice" "$(L good)" 1
cp "$k" "$dir/known-stale"
echo 'fx.a.gone  if other-cond' >> "$dir/known-stale"
case_ known-stale fail "not a test of the suite, yet in $dir/known-stale: fx.a.gone" -- \
	"${yes[@]}" --cond other-cond=no "$dir/known-stale" "$(L good)" 1

# --ksft: kselftest.h's plain lines, each result named by its RUN line.
cat > "$dir/ksft.log" <<'EOF'
TAP version 13
1..3
# [RUN] R/W pin in MAP_SHARED ... with memfd
ok 1 Should have worked
# [RUN] R/O pin ... with tmpfile
not ok 2 Should have failed
# [RUN] pin ... with memfd hugetlb (2048 kB)
ok 3 # SKIP need more free huge pages
# Totals: pass:1 fail:1 xfail:0 xpass:0 skip:1 error:0
EOF
printf 'R_O_pin_..._with_tmpfile\n' > "$dir/known-ksft"
sed '/^# \[RUN\] R\/O/d' "$dir/ksft.log" > "$dir/ksft-norun.log"
sed '/^ok 1 /d; s/^1\.\.3$/1..2/; s/^not ok 2 /not ok 1 /; s/^ok 3 /ok 2 /;
	s/pass:1 fail:1/pass:0 fail:1/' "$dir/ksft.log" > "$dir/ksft-noresult.log"
sed 's/^ok 1 /not ok 1 /; s/pass:1 fail:1/pass:0 fail:2/' "$dir/ksft.log" \
	> "$dir/ksft-unexpected.log"
case_ ksft-good 0 "every test passed or is an expected failure: 1 failed" -- \
	--ksft "$dir/known-ksft" "$dir/ksft.log" 1
case_ ksft-without-ksft fail "Should reported twice" -- \
	"$dir/known-ksft" "$dir/ksft.log" 1
case_ ksft-norun fail "a result with no RUN line before it: not ok 2" -- \
	--ksft "$dir/known-ksft" "$dir/ksft-norun.log" 1
case_ ksft-noresult fail "no result for R_W_pin_in_MAP_SHARED_..._with_memfd" -- \
	--ksft "$dir/known-ksft" "$dir/ksft-noresult.log" 1
case_ ksft-unexpected fail "UNEXPECTED FAILURE R_W_pin_in_MAP_SHARED_..._with_memfd" -- \
	--ksft "$dir/known-ksft" "$dir/ksft-unexpected.log" 1

# The condition names, for conformance.sh to probe.
"$judge" --conditions "$dir/known-stale" > "$dir/conditions.out"
printf 'some-cond\nother-cond\n' > "$dir/conditions.want"
if cmp -s "$dir/conditions.out" "$dir/conditions.want"; then
	echo "ok conditions"
	passed=$((passed + 1))
else
	echo "FAIL conditions: got $(tr '\n' ' ' < "$dir/conditions.out")"
	failed=$((failed + 1))
fi

# Each call of each tool the judge uses, made to print the right output
# and then fail: the judge must fail too, not go on with what it printed.
# The fake counts its calls; call n fails, for n = 1, 2, ... until a run
# has fewer than n calls (that run, with no call failing, must pass).
for tool in awk sort comm mktemp; do
	real=$(command -v "$tool")
	mkdir -p "$dir/fake-$tool"
	cat > "$dir/fake-$tool/$tool" <<EOF
#!/bin/sh
n=\$((\$(cat "$dir/calls") + 1))
echo "\$n" > "$dir/calls"
"$real" "\$@" || exit
[ "\$n" -ne "\$FAIL_AT" ] || exit 3
EOF
	chmod +x "$dir/fake-$tool/$tool"
	n=1
	while :; do
		echo 0 > "$dir/calls"
		st=0
		FAIL_AT=$n PATH="$dir/fake-$tool:$PATH" "$judge" "${yes[@]}" \
			"$k" "$(L good)" 1 > "$dir/fake.out" 2>&1 || st=$?
		calls=$(cat "$dir/calls")
		if [ "$calls" -lt "$n" ]; then
			if [ "$st" -ne 0 ] || [ "$n" -eq 1 ]; then
				echo "FAIL failing-$tool: exit $st after $calls calls, none failing"
				failed=$((failed + 1))
			else
				echo "ok failing-$tool: each of its $calls calls"
				passed=$((passed + 1))
			fi
			break
		fi
		if [ "$st" -eq 0 ]; then
			echo "FAIL failing-$tool: its call $n failed, the judge passed:"
			sed 's/^/    /' "$dir/fake.out"
			failed=$((failed + 1))
		fi
		n=$((n + 1))
	done
done

echo "conformance_judge: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]

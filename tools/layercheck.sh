#!/usr/bin/env bash
# layercheck.sh - check the library's call graph between files against
# src/LAYERS: no file references a file of a layer above its own, and no
# files reference each other in a cycle (see src/LAYERS for the rules).
#
#   tools/layercheck.sh [--dot] OBJDIR LAYERS
#
# OBJDIR is the object dir of CMake target hetmm_obj
# (BUILD/CMakeFiles/hetmm_obj.dir/src); OBJDIR/devices/emu.c.o is file
# "devices/emu".  The graph comes from the objects, not the sources, so it
# is what the linker sees: file A -> file B when A has an undefined symbol
# that B defines (a function or a data object).  Static symbols and
# symbols from outside the library (libc) make no edges.
#
# Prints every finding with the symbols behind it, then one summary line.
# With --dot the file graph goes to stdout as Graphviz (clusters = layers,
# red = layer violation, orange = other edge of a cycle) and the report to
# stderr.
#
# Exit status: 0 clean; 1 findings (layer violations, cycles, a file
# listed twice, an object not listed, a listed file with no object, a
# symbol defined twice); 2 the check could not run (usage, no nm, no
# objects, unreadable object, malformed LAYERS), so that a broken harness
# never reads as a pass or as a found violation.  NM=... picks another nm.
set -euo pipefail

die() { echo "layercheck: $*" >&2; exit 2; }

dot=0
if [[ ${1-} == --dot ]]; then dot=1; shift; fi
[[ $# -eq 2 ]] || die "usage: $0 [--dot] OBJDIR LAYERS"
objdir=${1%/} layers=$2
nm=${NM:-nm}
command -v "$nm" >/dev/null || die "'$nm' not found (binutils)"
[[ -d $objdir ]] || die "$objdir: no such directory (built yet?)"
[[ -f $layers && -r $layers ]] || die "$layers: cannot read"

objs=$(find "$objdir" -type f -name '*.o' | LC_ALL=C sort) ||
	die "cannot list $objdir"
[[ -n $objs ]] || die "no *.o under $objdir (built yet?)"

# Per object a line "@ FILE PATH" (so that objects without symbols count
# too), then its symbols as nm -P prints them: "NAME TYPE [VALUE SIZE]".
table=
while IFS= read -r obj; do
	file=${obj#"$objdir"/}
	file=${file%.o}
	file=${file%.*}		# devices/emu.c.o -> devices/emu
	syms=$("$nm" -P "$obj") || die "$nm failed on $obj"
	table+="@ $file $obj"$'\n'"$syms"$'\n'
done <<<"$objs"

rc=0
awk -v dot="$dot" -v LAYERS="$layers" -v OBJDIR="$objdir" '
function bad(msg) { printf "%s:%d: %s\n", LAYERS, FNR, msg > "/dev/stderr"
	aborted = 1; exit 2 }
function finding(msg) { print msg > rep; nfind++ }

BEGIN { rep = dot ? "/dev/stderr" : "/dev/stdout" }

# LAYERS: "name: file ...", top layer first; "#" comments, blank lines.
phase == "layers" && /^[ \t]*(#|$)/ { next }
phase == "layers" {
	if (!match($0, /^[ \t]*[A-Za-z0-9_.-]+[ \t]*:/))
		bad("expected \"name: file file ...\"")
	name = substr($0, 1, RLENGTH - 1); gsub(/[ \t]/, "", name)
	if (name in lnum) bad("layer " name " declared twice")
	lname[++nl] = name; lnum[name] = nl
	n = split(substr($0, RLENGTH + 1), fs)
	if (n == 0) bad("layer " name " lists no files")
	for (i = 1; i <= n; i++) {
		if (fs[i] in lay)
			finding("listed twice: " fs[i] " (layer " lname[lay[fs[i]]] \
			    " and layer " name ")")
		else { lay[fs[i]] = nl; listed[++nlisted] = fs[i] }
	}
	next
}

# Symbols from nm -P.  Defined globals: T W D B R C V G S i u; undefined
# (also weak undefined): U w v.  Lower-case t d b r are file-local.
phase == "syms" && $1 == "@" {
	f = $2
	if (f in path) finding("two objects are file " f ": " path[f] " " $3)
	path[f] = $3; obj[++nobj] = f; next
}
# _.stapsdt.base: the weak marker <sys/sdt.h> puts in every object with a
# USDT probe (src/trace.h), merged into one by the linker.
phase == "syms" && $1 == "_.stapsdt.base" { next }
phase == "syms" && $2 ~ /^[TWDBRCVGSiu]$/ {
	if ($1 in def) finding("defined twice: " $1 " in " def[$1] " and " f)
	else def[$1] = f
}
phase == "syms" && $2 ~ /^[Uwv]$/ { nref++; rfile[nref] = f; rsym[nref] = $1 }

END {
	if (aborted) exit 2

	# Nodes: the listed files top to bottom, then unlisted objects.
	for (i = 1; i <= nlisted; i++) {
		f = listed[i]
		if (f in path) node[++nn] = f
		else finding("stale: " f " (layer " lname[lay[f]] \
		    ") has no object in " OBJDIR)
	}
	for (i = 1; i <= nobj; i++) if (!((f = obj[i]) in lay)) {
		finding("unlisted: " f " (" path[f] ") is in no layer (a new " \
		    "source, or an old object left by a move: build afresh)")
		node[++nn] = f
	}
	for (i = 1; i <= nn; i++) idx[node[i]] = i

	# Edges, with the symbols behind each.
	for (i = 1; i <= nref; i++) {
		a = rfile[i]; s = rsym[i]
		if (!(s in def) || def[s] == a) continue
		e = idx[a] SUBSEP idx[def[s]]
		if (!(e in esyms)) { ne++; reach[e] = 1 }
		esyms[e] = esyms[e] " " s
	}

	# Violations: an edge from a layer to one listed before it.
	for (i = 1; i <= nn; i++) for (j = 1; j <= nn; j++) {
		e = i SUBSEP j
		if (!(e in esyms) || !(node[i] in lay) || !(node[j] in lay)) continue
		if (lay[node[j]] < lay[node[i]]) {
			finding("layer violation: " node[i] " (layer " lname[lay[node[i]]] \
			    ") -> " node[j] " (layer " lname[lay[node[j]]] "):" esyms[e])
			nviol++
			red[e] = 1
		}
	}

	# Cycles: the strongly connected components with more than one file,
	# from the transitive closure (Floyd-Warshall; tens of files).
	for (k = 1; k <= nn; k++) for (i = 1; i <= nn; i++)
		if ((i, k) in reach) for (j = 1; j <= nn; j++)
			if ((k, j) in reach) reach[i, j] = 1
	for (i = 1; i <= nn; i++) {
		if (i in comp) continue
		members = node[i]; size = 1
		for (j = i + 1; j <= nn; j++)
			if ((i, j) in reach && (j, i) in reach) {
				comp[j] = i; members = members " " node[j]; size++
			}
		if (size == 1) continue
		comp[i] = i; ncycles++
		finding("cycle: " members)
		for (a = 1; a <= nn; a++) for (b = 1; b <= nn; b++) {
			e = a SUBSEP b
			if ((e in esyms) && (a in comp) && (b in comp) &&
			    comp[a] == i && comp[b] == i) {
				print "  " node[a] " -> " node[b] ":" esyms[e] > rep
				cyc[e] = 1
			}
		}
	}

	if (dot) {
		print "digraph hetmm {\n\tnode [shape=box];"
		for (l = 1; l <= nl; l++) {
			printf "\tsubgraph cluster_%d { label=\"%s\";", l, lname[l]
			for (i = 1; i <= nn; i++)
				if ((node[i] in lay) && lay[node[i]] == l)
					printf " \"%s\";", node[i]
			print " }"
		}
		for (i = 1; i <= nn; i++) for (j = 1; j <= nn; j++)
			if ((e = i SUBSEP j) in esyms)
				printf "\t\"%s\" -> \"%s\" [tooltip=\"%s\"%s];\n",
				    node[i], node[j], substr(esyms[e], 2),
				    (e in red) ? ", color=red" : \
				    (e in cyc) ? ", color=orange" : ""
		print "}"
	}

	sum = nn+0 " files, " ne+0 " edges, " nl+0 " layers"
	if (nfind) {
		printf "layercheck: FAILED: %d layer violations, %d cycles, " \
		    "%d other; %s\n", nviol, ncycles, nfind - nviol - ncycles,
		    sum > rep
		exit 1
	}
	print "layercheck: ok: " sum > rep
}' phase=layers "$layers" phase=syms - <<<"$table" || rc=$?
# awk exits 1 for findings, 2 (after saying why) for a malformed LAYERS
# or an error of its own.
[[ $rc -le 2 ]] || die "awk failed ($rc)"
exit "$rc"

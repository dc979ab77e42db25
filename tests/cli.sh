#!/usr/bin/env bash
# cli.sh HETMM_BINARY HETMM_H
#
# The command line's front matter: --version gives the header's version
# and the library's (the same here), `hetmm help CMD` each command's
# usage on stdout with exit 0, an unknown command exit 2.
set -uo pipefail
bin=${1:?usage: cli.sh HETMM_BINARY HETMM_H}
hdr=${2:?usage: cli.sh HETMM_BINARY HETMM_H}
fails=0
fail() { echo "cli: $*" >&2; fails=$((fails + 1)); }

ver() { sed -n "s/^#define HETMM_VERSION_$1 \([0-9]*\)$/\1/p" "$hdr"; }
v="$(ver MAJOR).$(ver MINOR).$(ver PATCH)"
want="hetmm $v (library $v)"
got=$("$bin" --version) || fail "--version exited $?"
[ "$got" = "$want" ] || fail "--version said '$got', want '$want'"

for cmd in info bench demo file-scan help; do
	out=$("$bin" help "$cmd") || fail "help $cmd exited $?"
	case "$out" in
	"usage: hetmm $cmd"*|"usage: hetmm <command>"*) ;;
	*) fail "help $cmd printed '${out%%$'\n'*}'" ;;
	esac
done
"$bin" help nosuch >/dev/null 2>&1
[ $? = 2 ] || fail "help nosuch did not exit 2"
"$bin" nosuch >/dev/null 2>&1
[ $? = 2 ] || fail "an unknown command did not exit 2"
[ "$fails" = 0 ] || exit 1
echo "cli: --version and help for every command"

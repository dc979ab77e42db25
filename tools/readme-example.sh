#!/usr/bin/env bash
# readme-example.sh README.md EXAMPLE.c
#
# Exit 0 when the first ```c block of README.md is EXAMPLE.c byte for
# byte; otherwise print the difference and exit 1.
set -euo pipefail
readme=${1:?usage: readme-example.sh README.md EXAMPLE.c}
example=${2:?usage: readme-example.sh README.md EXAMPLE.c}
block=$(mktemp)
trap 'rm -f "$block"' EXIT
awk '/^```c$/ && !seen { inblock = 1; seen = 1; next }
     inblock && /^```$/ { exit }
     inblock { print }' "$readme" > "$block"
if [ ! -s "$block" ]; then
	echo "readme-example: $readme has no \`\`\`c block" >&2
	exit 1
fi
if ! diff -u "$example" "$block"; then
	echo "readme-example: README.md's example differs from $example" \
	     "(diff above: - file, + README)" >&2
	exit 1
fi
echo "readme-example: README.md's example is $example"

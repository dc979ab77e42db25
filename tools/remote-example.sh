#!/usr/bin/env bash
# remote-example.sh MEMD EXAMPLE - the README's two-terminal example in
# one: hetmm-memd started on a free loopback port with a fresh secret,
# examples/remote.c run against it, the server stopped with SIGTERM.
# Fails if the example fails, or the server does not stop cleanly.
set -eu
memd=${1:?usage: remote-example.sh MEMD EXAMPLE}
example=${2:?usage: remote-example.sh MEMD EXAMPLE}
dir=$(mktemp -d)
pid=
cleanup() {
	[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT
head -c 32 /dev/urandom > "$dir/secret"
chmod 600 "$dir/secret"
"$memd" --listen 127.0.0.1:0 --capacity 256M --secret "$dir/secret" \
	> "$dir/log" &
pid=$!
for _ in $(seq 100); do
	grep -q "listening on" "$dir/log" && break
	sleep 0.1
done
addr=$(sed -n 's/.*listening on \([^,]*\),.*/\1/p' "$dir/log")
[ -n "$addr" ] || { echo "hetmm-memd did not start" >&2; exit 1; }
"$example" "$addr" "$dir/secret" 16
kill -TERM "$pid"
wait "$pid"
pid=
grep -q "admitted" "$dir/log"
grep -q "stopped" "$dir/log"
cat "$dir/log"

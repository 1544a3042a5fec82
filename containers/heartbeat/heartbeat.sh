#!/bin/sh
# Every HEARTBEAT_INTERVAL seconds, append "<UTC time> <hostname>" to
# HEARTBEAT_FILE and print it, so a demo shows both a container's logs and its
# data volume surviving restarts.
set -eu

interval=${HEARTBEAT_INTERVAL:-5}
file=${HEARTBEAT_FILE:-/data/heartbeat.log}
# Engines set HOSTNAME in the environment; busybox sh does not set it itself.
# shellcheck disable=SC3028
host=${HOSTNAME:-$(hostname)}
sleeper=

# Sleep runs in the background and the shell waits on it: a shell blocked in a
# foreground `sleep` would run the trap only after the sleep ended, while
# `wait` returns as soon as a trapped signal arrives, so stop is prompt.
stop() {
    if [ -n "$sleeper" ]; then kill "$sleeper" 2>/dev/null || true; fi
    echo "heartbeat: stopping on signal"
    exit 0
}
trap stop TERM INT

mkdir -p "$(dirname "$file")"
echo "heartbeat: every ${interval}s to $file"
while :; do
    line="$(date -u +%Y-%m-%dT%H:%M:%SZ) $host"
    echo "$line" >>"$file"
    echo "$line"
    sleep "$interval" &
    sleeper=$!
    wait "$sleeper" || true
done

#!/bin/sh
# Runs busybox httpd as a child rather than as PID 1: httpd sets no SIGTERM
# handler and the kernel drops unhandled signals sent to PID 1, so `stop` would
# otherwise wait out the whole grace period and then SIGKILL it.
set -eu

busybox httpd -f -v -p "${WEB_PORT:-8080}" -h /www &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true; wait "$pid" || true; exit 0' TERM INT
wait "$pid"

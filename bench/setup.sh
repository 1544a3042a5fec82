#!/usr/bin/env bash
# Prepare this machine for the benchmarks in bench/: everything scripts/setup
# prepares (engines, their daemons, the base image, the venv), plus the peers
# hostos is measured against: Debian's docker-compose (1.29.2), hyperfine, and
# the project's `bench` extra (podman-compose) in the venv.
# Runs as root with no stdin; safe to run again, and cheap when all is in place.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
readonly ROOT
readonly VENV=$ROOT/.venv
# Our own stamp: scripts/setup's stamp (.hostos-installed) records the `test`
# extra only, and is left to scripts/setup.
readonly STAMP=$VENV/.hostos-bench-installed
readonly PACKAGES=(docker-compose hyperfine)

export DEBIAN_FRONTEND=noninteractive
export NEEDRESTART_SUSPEND=1  # no service-restart prompt or noise from apt

log() { echo "bench/setup: $*"; }
die() { echo "bench/setup: error: $*" >&2; exit 1; }

is_installed() {
    [[ $(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

ensure_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        is_installed "$pkg" || missing+=("$pkg")
    done
    ((${#missing[@]} == 0)) && return 0
    apt-get update -qq
    log "apt-get install ${missing[*]}"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Reinstalled only when pyproject.toml changes (the install is editable). pip
# only adds here: the test extra and the package itself stay as scripts/setup left them.
ensure_bench_extra() {
    local want
    want=$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)
    if [[ -f $STAMP && $(<"$STAMP") == "$want" && -x $VENV/bin/podman-compose ]]; then
        return 0
    fi
    log "pip install -e '.[bench]' into $VENV"
    "$VENV/bin/python" -m pip install --quiet -e "${ROOT}[bench]"
    echo "$want" >"$STAMP"
}

check_tools() {
    local version
    version=$(docker-compose version --short 2>/dev/null) || die "docker-compose does not run"
    [[ $version == 1.29.* ]] || log "warning: docker-compose is $version, the benchmark names 1.29.2"
    "$VENV/bin/podman-compose" --version >/dev/null 2>&1 || die "podman-compose does not run"
    hyperfine --version >/dev/null || die "hyperfine does not run"
}

main() {
    ((EUID == 0)) || die "run as root (sudo bench/setup.sh): it installs packages and starts daemons"
    # Engines, daemons, base image and venv: exactly what tests and the demo use.
    bash "$ROOT/scripts/setup"
    ensure_packages
    ensure_bench_extra
    check_tools
    log "ready (docker-compose $(docker-compose version --short)," \
        "$("$VENV/bin/podman-compose" --version 2>/dev/null | head -n1)," \
        "$(hyperfine --version))"
}

main "$@"

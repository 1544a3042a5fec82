#!/usr/bin/env bash
# Build the base image hostos/busybox:latest from the host's static busybox and
# import it into each engine named on the command line (docker, podman).
# No registry is reachable, so every image the project uses starts from this one.
#
# usage: containers/busybox/build.sh [--force] ENGINE...
#   docker names the image hostos/busybox:latest (docker.io/ is implied),
#   podman names it localhost/hostos/busybox:latest; in both engines a
#   Dockerfile's `FROM hostos/busybox:latest` resolves to it without a pull.
set -euo pipefail

readonly IMAGE=hostos/busybox:latest
readonly BUSYBOX=${BUSYBOX:-/usr/bin/busybox}

die() { echo "busybox/build.sh: $*" >&2; exit 1; }

# The name each engine stores an imported short name under; podman prefixes
# localhost/ itself, spelling it out keeps `podman images` unambiguous.
engine_ref() {
    case $1 in
        docker) echo "$IMAGE" ;;
        podman) echo "localhost/$IMAGE" ;;
        *) die "unknown engine '$1' (want docker or podman)" ;;
    esac
}

have_image() { "$1" image inspect "$(engine_ref "$1")" >/dev/null 2>&1; }

# Lay out a minimal root: busybox and its applet links, the users the demo
# images run as, and the writable dirs programs expect.
make_rootfs() {
    local root=$1
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,proc,sys,dev,run,var/tmp,tmp}
    chmod 1777 "$root/tmp" "$root/var/tmp"
    chmod 0700 "$root/root"
    cp "$BUSYBOX" "$root/bin/busybox"
    # --install writes absolute paths, so run it inside the root, never on the
    # host; it also proves the binary is static, as the rootfs has no libc.
    chroot "$root" /bin/busybox --install -s ||
        die "$BUSYBOX does not run without a libc (install busybox-static)"
    cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
    cat >"$root/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
GROUP
    # Engines bind-mount their own hosts/resolv.conf/hostname over these.
    : >"$root/etc/hosts"
    : >"$root/etc/resolv.conf"
    : >"$root/etc/hostname"
}

main() {
    local force=0
    if [[ ${1:-} == --force ]]; then force=1; shift; fi
    (($#)) || die "usage: $0 [--force] docker|podman..."

    local todo=() engine
    for engine in "$@"; do
        engine_ref "$engine" >/dev/null
        if ((force)) || ! have_image "$engine"; then todo+=("$engine"); fi
    done
    ((${#todo[@]})) || return 0

    # Global, not local: the EXIT trap runs after main has returned.
    work=$(mktemp -d /tmp/hostos-busybox.XXXXXX)
    trap 'rm -rf "$work"' EXIT
    make_rootfs "$work/root"
    # Root-owned, numeric: the image must not depend on the build host's users.
    tar -C "$work/root" --numeric-owner --owner=0 --group=0 -cf "$work/rootfs.tar" .

    for engine in "${todo[@]}"; do
        case $engine in
            docker) docker import -c 'CMD ["/bin/sh"]' "$work/rootfs.tar" "$(engine_ref docker)" >/dev/null ;;
            podman) podman import --quiet --change 'CMD ["/bin/sh"]' "$work/rootfs.tar" "$(engine_ref podman)" >/dev/null ;;
        esac
        echo "busybox/build.sh: imported $(engine_ref "$engine") into $engine"
    done
}

main "$@"

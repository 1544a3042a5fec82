# The hostos host OS: what a node boots into RAM.
#
# Debian bookworm slim, a kernel, podman and crun, Python and hostos, nothing else.
# `hostos image build` builds this file, exports the root filesystem of the last
# stage, prunes it (docs, locales, caches, package databases, all but a few kernel
# modules) and packs it into vmlinuz + initramfs.img; see hostos/image/build.py.
# Nothing here needs an image registry: `hostos image base` makes debian:bookworm-slim
# locally, and the RUN steps reach only the Debian and PyPI package registries.
#
# Build arguments:
#   NODE_ENGINE=podman|docker   the container engine of the node (podman by default)
#   NODE_RUNTIME=crun|runc      podman's OCI runtime (crun by default: 8 MB smaller and quicker
#                               to start than runc; /init takes either)
#   KERNEL=linux-image-…        a kernel package; default: what linux-image-amd64 depends on
#   SOURCE_DATE_EPOCH           fixed timestamps for the Python bytecode
#   EXTRA_CA_CERTS              PEM certificates pip must trust (set by hostos image build)
#
# The legacy Docker builder (docker.io 20.10) builds it: no heredocs, no COPY --chmod.

ARG BASE=debian:bookworm-slim

# --- the kernel: unpacked, never installed, so no initramfs-tools, no kmod at run time ---
FROM ${BASE} AS kernel
ARG KERNEL=
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends kmod; \
    cd /tmp; \
    pkg=${KERNEL:-$(apt-cache depends linux-image-amd64 | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n1)}; \
    apt-get download "$pkg"; \
    dpkg-deb -x "$pkg"_*.deb /kernel; \
    dpkg-deb -f "$pkg"_*.deb Package Version | sed 's/^[A-Za-z]*: //' | paste -sd' ' > /kernel/boot/package; \
    ver=$(ls /kernel/lib/modules); \
    depmod -b /kernel "$ver"; \
    mv /kernel/boot/vmlinuz-"$ver" /kernel/boot/vmlinuz; \
    rm -rf /kernel/boot/System.map-* /kernel/boot/config-* /kernel/usr/share

# --- hostos and its Python dependencies, as wheels, into /usr/local ---
FROM ${BASE} AS python
ARG SOURCE_DATE_EPOCH=1700000000
# Bytecode with hash-based invalidation (py_compile's default under SOURCE_DATE_EPOCH):
# the same source gives the same .pyc whenever it is built.
ENV SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH} PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# The build machine's own CA certificates (a TLS-inspecting proxy on the way to PyPI), passed
# in by `hostos image build` from /usr/local/share/ca-certificates; only this stage sees them.
ARG EXTRA_CA_CERTS=
RUN set -eu; \
    apt-get update; \
    apt-get install -y --no-install-recommends python3-pip ca-certificates; \
    if [ -n "$EXTRA_CA_CERTS" ]; then \
        printf '%s\n' "$EXTRA_CA_CERTS" > /usr/local/share/ca-certificates/build-host.crt; \
        update-ca-certificates; \
    fi
# Exact versions, binary wheels only: the image does not change when PyPI does.
# podman-only: no docker-py (hostos imports it only for --engine docker); typer
# without rich (TYPER_USE_RICH=0 in the launcher below), pydantic v2 from PyPI
# (bookworm ships v1).
ARG PYTHON_PACKAGES="pydantic==2.14.3 pydantic-core==2.50.4 typing-extensions==4.16.0 \
    typing-inspection==0.4.5 annotated-types==0.8.0 typer==0.29.2 annotated-doc==0.0.7 \
    shellingham==1.5.4 PyYAML==6.0.3 watchdog==7.1.0 podman==5.8.0 requests==2.34.2 \
    urllib3==2.8.0 idna==3.20 charset-normalizer==3.5.2 certifi==2026.10.18"
ARG DOCKER_PACKAGES="docker==7.2.0"
ARG NODE_ENGINE=podman
ENV SITE=/staging/usr/local/lib/python3.11/dist-packages
# The dependencies first, in a layer of their own: editing hostos does not fetch them again.
RUN set -eux; \
    extra=; [ "$NODE_ENGINE" = docker ] && extra="$DOCKER_PACKAGES"; \
    pip install --break-system-packages --no-deps --only-binary=:all: --target "$SITE" \
        $PYTHON_PACKAGES $extra; \
    rm -rf "$SITE"/bin
COPY pyproject.toml README.md /src/
COPY hostos /src/hostos
RUN set -eux; \
    pip wheel --no-deps --wheel-dir /wheels /src; \
    pip install --break-system-packages --no-deps --target "$SITE" /wheels/hostos-*.whl; \
    rm -rf "$SITE"/bin; \
    mkdir -p /staging/usr/local/bin; \
    printf '%s\n' '#!/usr/bin/python3' \
        '"""hostos, as installed in the host image."""' \
        'import os, sys' \
        'os.environ.setdefault("TYPER_USE_RICH", "0")' \
        'from hostos.cli.launch import main' \
        'main()' > /staging/usr/local/bin/hostos; \
    chmod 0755 /staging/usr/local/bin/hostos

# --- the root filesystem of the node ---
FROM ${BASE} AS root
ARG NODE_ENGINE=podman
ARG NODE_RUNTIME=crun
# gpg spelled out: otherwise libgpgme11 pulls in the whole gnupg suite.
RUN set -eux; \
    case "$NODE_ENGINE" in \
        podman) engine="podman $NODE_RUNTIME conmon netavark gpg" ;; \
        docker) engine="docker.io runc" ;; \
        *) echo "NODE_ENGINE must be podman or docker" >&2; exit 1 ;; \
    esac; \
    apt-get update; \
    apt-get install -y --no-install-recommends $engine iptables busybox-static python3; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*
# Podman on a node without systemd: cgroupfs, events to a file, netavark only.
RUN set -eux; \
    mkdir -p /etc/containers/containers.conf.d; \
    printf '%s\n' '# hostos host image defaults (no systemd on the node)' \
        '[engine]' "runtime = \"$NODE_RUNTIME\"" 'cgroup_manager = "cgroupfs"' \
        'events_logger = "file"' \
        '[network]' 'network_backend = "netavark"' \
        > /etc/containers/containers.conf.d/00-hostos.conf
# Merged /usr: copy to /usr/lib, never to /lib, or the /lib symlink becomes a directory.
COPY --from=kernel /kernel/lib/modules /usr/lib/modules
COPY --from=kernel /kernel/boot /boot
COPY --from=python /staging/usr/local /usr/local

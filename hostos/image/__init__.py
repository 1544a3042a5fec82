"""The host image: the Dockerfile's root filesystem, pruned and packed for a RAM boot.

`base` makes the Debian base image offline (mmdebstrap), `build` turns the
Dockerfile into vmlinuz + initramfs.img + boot.ipxe + manifest.json, `init/`
holds the node's `/init` and its defaults.
"""

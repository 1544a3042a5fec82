"""The iPXE script that boots a node into its assigned image (`GET /boot/<mac>.ipxe`).

```
#!ipxe
kernel http://server/images/G/vmlinuz initrd=initramfs.img <image args> hostos.node=ID
       hostos.server=URL hostos.image=G BOOTIF=01-52-54-00-12-34-56
initrd --name initramfs.img http://server/images/G/initramfs.img
boot
```

`initrd=` names the initrd for an EFI-stub kernel; `BOOTIF=` (pxelinux's form, the MAC the
node asked with) tells /init which NIC to bring up.  The arguments are checked: iPXE expands
`${…}` in every script line, and a space would split an argument in two.
"""

from __future__ import annotations

import re

from hostos.cluster.records import ImageRecord

RETRY_SECONDS = 30
SAFE_WORD = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no space


class ScriptError(ValueError):
    """A kernel argument that iPXE would not pass through as written."""


def _word(word: str) -> str:
    if not SAFE_WORD.match(word) or "$" in word:
        raise ScriptError(f"kernel argument {word!r} cannot go into an iPXE script as is")
    return word


def check_cmdline(cmdline: str) -> str:
    """cmdline, when every word of it can go into a script as written."""
    for word in cmdline.split():
        _word(word)
    return cmdline


def kernel_args(
    image: ImageRecord, *, node_id: str, mac_id: str, server_url: str, token: str | None = None
) -> list[str]:
    """The kernel command line: the image's own arguments, then hostos's (which win)."""
    ours = {
        "initrd": image.initrd,
        "hostos.node": node_id,
        "hostos.server": server_url,
        "hostos.image": image.name,
        "BOOTIF": f"01-{mac_id}",
    }
    if token is not None:
        ours["hostos.token"] = token
    theirs = [w for w in image.cmdline.split() if w.split("=", 1)[0] not in ours]
    return [_word(w) for w in [*theirs, *(f"{k}={v}" for k, v in ours.items())]]


def boot_script(
    image: ImageRecord, *, node_id: str, mac_id: str, server_url: str, token: str | None = None
) -> str:
    base = f"{server_url.rstrip('/')}/images/{image.name}"
    args = kernel_args(image, node_id=node_id, mac_id=mac_id, server_url=server_url, token=token)
    return (
        "#!ipxe\n"
        f"echo hostos: booting {node_id} into image {image.name}\n"
        f"kernel {_word(base + '/' + image.kernel)} {' '.join(args)}\n"
        f"initrd --name {_word(image.initrd)} {_word(base + '/' + image.initrd)}\n"
        "boot\n"
    )


def chain_script(server_url: str) -> str:
    """The one script every node can be pointed at (DHCP filename `…/boot.ipxe`): it chains
    to the node's own script, named by the MAC of the NIC iPXE booted from (`netX`)."""
    return (
        f"#!ipxe\nchain --replace {_word(server_url.rstrip('/'))}/boot/${{netX/mac:hexhyp}}.ipxe\n"
    )


def waiting_script(reason: str, retry_url: str, seconds: int = RETRY_SECONDS) -> str:
    """For a node with nothing to boot yet: say why on the console, wait, ask again."""
    message = re.sub(r"[^A-Za-z0-9 ._:/'()-]", "?", reason)
    return (
        "#!ipxe\n"
        f"echo hostos: {message}, asking again in {seconds}s\n"
        f"sleep {seconds}\n"
        f"chain --replace {_word(retry_url)}\n"
    )

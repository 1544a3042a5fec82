"""Booting a node over the network, written and read back in one place: the files of an
image, the kernel arguments hostos and its /init read, kernel command lines and iPXE scripts.

Writers: `image_script` (the boot.ipxe of a built image, URLs relative to it),
`node_script` (the server's `GET /boot/<mac>.ipxe`), `chain_script` and `waiting_script`
(the server's other answers), `join_cmdline` (qemu's -append).  Readers: `script_cmdline`
(the kernel arguments of a script's kernel line), `parse_cmdline` (key=value words, the last
one of a key wins as it does for the kernel and /init), `proc_cmdline` and `node_id`.

A node script's arguments are checked: iPXE expands `${…}` in every script line, and a space
would split an argument in two.  hostos/image/init/init reads the names of `Arg` in shell
(tests/image/test_image_netboot.py keeps the two lists the same).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

KERNEL = "vmlinuz"
INITRD = "initramfs.img"
IPXE = "boot.ipxe"
FILES = (KERNEL, INITRD, IPXE)  # what an image directory serves
PROC_CMDLINE = "/proc/cmdline"
RETRY_SECONDS = 30  # a node with nothing to boot asks again after this
SAFE_WORD = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no space
SCRIPT_KERNEL_WORDS = ("kernel", "chain", "boot")  # iPXE commands that take kernel arguments
SCRIPT_VALUED_OPTIONS = ("--name", "-n", "--timeout", "-t")


class Arg(StrEnum):
    """Kernel arguments hostos writes or reads.  hostos/image/init/init reads them all but
    hostos.image (the supervisor reads it from /proc/cmdline) and initrd (the kernel's)."""

    NODE = "hostos.node"  # the node's id (inventory name, or its MAC in the node-id form)
    ROLE = "hostos.role"
    SITE = "hostos.site"
    SERVER = "hostos.server"
    TOKEN = "hostos.token"
    IMAGE = "hostos.image"  # the host image this boot is
    SITE_OPTS = "hostos.site_opts"
    SITE_WAIT = "hostos.site_wait"
    ENGINE = "hostos.engine"
    RESCUE = "hostos.rescue"
    SHELL = "hostos.shell"
    STOP_TIMEOUT = "hostos.stop_timeout"
    MODULES = "hostos.modules"
    DEBUG = "hostos.debug"
    IP = "ip"
    BOOTIF = "BOOTIF"  # 01-<MAC with hyphens>: the NIC iPXE booted from (pxelinux's form)
    INITRD = "initrd"  # the initrd's name, for an EFI-stub kernel


class ScriptError(ValueError):
    """A kernel argument that iPXE would not pass through as written."""


@dataclass(frozen=True)
class NodeBoot:
    """What the server's boot script for one node says."""

    server_url: str  # hostos.server=, and where the image files are fetched from
    image: str  # the image's name: hostos.image=, and its directory under /images
    node_id: str
    mac_id: str  # the MAC iPXE asked with, in the node-id form (52-54-00-12-34-56)
    cmdline: str = ""  # the image's own kernel arguments
    kernel: str = KERNEL
    initrd: str = INITRD
    token: str | None = None


# -- writing -------------------------------------------------------------------------------


def _word(word: str) -> str:
    if not SAFE_WORD.match(word) or "$" in word:
        raise ScriptError(f"kernel argument {word!r} cannot go into an iPXE script as is")
    return word


def check_cmdline(cmdline: str) -> str:
    """cmdline, when every word of it can go into a script as written."""
    for word in cmdline.split():
        _word(word)
    return cmdline


def bootif(mac_id: str) -> str:
    return f"01-{mac_id}"


def node_args(boot: NodeBoot) -> list[str]:
    """The kernel arguments of a node: the image's own, then hostos's (which win)."""
    ours = {
        Arg.INITRD: boot.initrd,
        Arg.NODE: boot.node_id,
        Arg.SERVER: boot.server_url,
        Arg.IMAGE: boot.image,
        Arg.BOOTIF: bootif(boot.mac_id),
    }
    if boot.token is not None:
        ours[Arg.TOKEN] = boot.token
    theirs = [w for w in boot.cmdline.split() if w.split("=", 1)[0] not in ours]
    return [_word(w) for w in [*theirs, *(f"{k}={v}" for k, v in ours.items())]]


def node_script(boot: NodeBoot) -> str:
    """The iPXE script that boots a node into its image from the server:

    ```
    #!ipxe
    echo hostos: booting ID into image G
    kernel http://server/images/G/vmlinuz <image args> initrd=initramfs.img hostos.node=ID
           hostos.server=URL hostos.image=G BOOTIF=01-52-54-00-12-34-56
    initrd --name initramfs.img http://server/images/G/initramfs.img
    boot
    ```
    """
    base = f"{boot.server_url.rstrip('/')}/images/{boot.image}"
    return (
        "#!ipxe\n"
        f"echo hostos: booting {boot.node_id} into image {boot.image}\n"
        f"kernel {_word(base + '/' + boot.kernel)} {' '.join(node_args(boot))}\n"
        f"initrd --name {_word(boot.initrd)} {_word(base + '/' + boot.initrd)}\n"
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


def image_script(kernel_version: str, image_id: str, cmdline: str) -> str:
    """The boot.ipxe of a built image: boots it from where it is served (URLs relative to
    it).  cmdline is not checked: a static script may use iPXE's own ${…} settings."""
    kernel = " ".join(["kernel", KERNEL, f"{Arg.INITRD}={INITRD}", *cmdline.split()])
    return (
        "#!ipxe\n"
        f"# hostos host image {image_id.removeprefix('sha256:')[:12]},"
        f" kernel {kernel_version}\n"
        f"{kernel}\n"
        f"initrd {INITRD}\n"
        "boot\n"
    )


def join_cmdline(*parts: str) -> str:
    """Command lines (shell-quoted words) joined in order, a word repeated kept once at its
    first place: later values of a key still win, the kernel and /init take the last one."""
    words = [word for part in parts for word in shlex.split(part)]
    return " ".join(dict.fromkeys(words))


# -- reading -------------------------------------------------------------------------------


def script_cmdline(script: str) -> str:
    """The kernel arguments of the `kernel` line of an iPXE script, without its file name,
    iPXE's own options (--name …) and initrd= (qemu passes the initrd itself)."""
    for line in script.splitlines():
        words = line.split()
        if not words or words[0] not in SCRIPT_KERNEL_WORDS:
            continue
        args = words[1:]
        while args and args[0].startswith("-"):  # kernel --name vmlinuz --timeout …
            args = args[2:] if args[0] in SCRIPT_VALUED_OPTIONS else args[1:]
        return " ".join(a for a in args[1:] if not a.startswith(f"{Arg.INITRD}="))
    return ""


def image_cmdline(directory: Path) -> str:
    """The kernel arguments of the boot.ipxe in an image directory ("" without one)."""
    script = directory / IPXE
    return script_cmdline(script.read_text()) if script.is_file() else ""


def parse_cmdline(text: str) -> dict[str, str]:
    """The `key=value` words of a kernel command line; the last value of a key wins."""
    words = (w.split("=", 1) for w in text.split() if "=" in w)
    return {key: value for key, value in words}


def script_args(script: str) -> dict[str, str]:
    """The `key=value` kernel arguments of an iPXE script's kernel line."""
    return parse_cmdline(script_cmdline(script))


def proc_cmdline(path: str = PROC_CMDLINE) -> dict[str, str]:
    """This boot's kernel arguments ({} when they cannot be read)."""
    try:
        with open(path) as file:
            return parse_cmdline(file.read())
    except OSError:
        return {}


def bootif_mac(value: str) -> str | None:
    """The MAC of BOOTIF=01-52-54-… in the node-id form (52-54-…), None when it is not one."""
    mac = value[3:] if value.startswith("01-") else ""
    return mac.lower() if len(mac) == 17 else None


def node_id(args: Mapping[str, str]) -> str | None:
    """hostos.node=, else the MAC of BOOTIF= in the node-id form."""
    if args.get(Arg.NODE):
        return args[Arg.NODE]
    return bootif_mac(args.get(Arg.BOOTIF, ""))

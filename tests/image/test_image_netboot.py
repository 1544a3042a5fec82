"""Kernel command lines and iPXE scripts, written and read back (hostos.image.netboot)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hostos.image import netboot
from hostos.image.netboot import Arg, NodeBoot, ScriptError

INIT = Path(__file__).resolve().parents[2] / "hostos" / "image" / "init" / "init"

BOOT = NodeBoot(
    server_url="http://10.0.0.1:8080/",
    image="g7",
    node_id="cn001",
    mac_id="52-54-00-12-34-56",
    cmdline="console=ttyS0 quiet hostos.node=stale initrd=x",
)

# -- writing ----------------------------------------------------------------------------------


def test_node_script() -> None:
    assert netboot.node_script(BOOT).splitlines() == [
        "#!ipxe",
        "echo hostos: booting cn001 into image g7",
        "kernel http://10.0.0.1:8080/images/g7/vmlinuz console=ttyS0 quiet"
        " initrd=initramfs.img hostos.node=cn001 hostos.server=http://10.0.0.1:8080/"
        " hostos.image=g7 BOOTIF=01-52-54-00-12-34-56",
        "initrd --name initramfs.img http://10.0.0.1:8080/images/g7/initramfs.img",
        "boot",
    ]


def test_the_token_is_the_last_argument() -> None:
    args = netboot.node_args(NodeBoot("u", "g", "n", "m", token="hn1.n.s"))
    assert args[-1] == "hostos.token=hn1.n.s"
    assert "hostos.token" not in " ".join(netboot.node_args(NodeBoot("u", "g", "n", "m")))


@pytest.mark.parametrize("cmdline", ["x=${net0/ip}", "a=\x01", "é"])
def test_node_script_refuses_what_ipxe_would_mangle(cmdline: str) -> None:
    with pytest.raises(ScriptError):
        netboot.node_script(NodeBoot("http://s", "g", "n", "m", cmdline=cmdline))
    with pytest.raises(ScriptError):
        netboot.check_cmdline(cmdline)


def test_check_cmdline_passes_what_ipxe_keeps() -> None:
    assert netboot.check_cmdline("console=ttyS0 quiet") == "console=ttyS0 quiet"


def test_waiting_script_asks_again() -> None:
    script = netboot.waiting_script("no image for cn001; ${evil}", "http://s/boot/m.ipxe", 5)
    assert script.splitlines()[1:] == [
        "echo hostos: no image for cn001? ??evil?, asking again in 5s",
        "sleep 5",
        "chain --replace http://s/boot/m.ipxe",
    ]


def test_chain_script_names_the_booting_nic() -> None:
    assert netboot.chain_script("http://10.0.0.1:8080/") == (
        "#!ipxe\nchain --replace http://10.0.0.1:8080/boot/${netX/mac:hexhyp}.ipxe\n"
    )


@pytest.mark.parametrize(
    ("cmdline", "kernel_line"),
    [
        ("console=ttyS0", "kernel vmlinuz initrd=initramfs.img console=ttyS0"),
        ("", "kernel vmlinuz initrd=initramfs.img"),
        ("a  b", "kernel vmlinuz initrd=initramfs.img a b"),
        ("x=${base}", "kernel vmlinuz initrd=initramfs.img x=${base}"),  # iPXE's own settings
    ],
)
def test_image_script(cmdline: str, kernel_line: str) -> None:
    script = netboot.image_script("6.1.0-56-amd64", "sha256:0123456789abcdef", cmdline)
    assert script.splitlines() == [
        "#!ipxe",
        "# hostos host image 0123456789ab, kernel 6.1.0-56-amd64",
        kernel_line,
        "initrd initramfs.img",
        "boot",
    ]


@pytest.mark.parametrize(
    ("parts", "want"),
    [
        (("quiet console=ttyS0", "console=ttyS0 panic=-1", "hostos.node=a quiet"),
         "quiet console=ttyS0 panic=-1 hostos.node=a"),
        (("", ""), ""),
        (("", "hostos.site='a b'"), "hostos.site=a b"),
        (("hostos.node=a", "hostos.node=b"), "hostos.node=a hostos.node=b"),  # the last wins
    ],
)  # fmt: skip
def test_join_cmdline(parts: tuple[str, ...], want: str) -> None:
    assert netboot.join_cmdline(*parts) == want


# -- reading ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "want"),
    [
        (
            "#!ipxe\nkernel vmlinuz initrd=initramfs.img console=tty0 hostos.site=nfs://m/s\n"
            "initrd initramfs.img\nboot\n",
            "console=tty0 hostos.site=nfs://m/s",
        ),
        ("#!ipxe\nkernel --name vmlinuz http://x/vmlinuz quiet\nboot\n", "quiet"),
        ("#!ipxe\nkernel -n k --timeout 5 http://x/vmlinuz a=1\nboot\n", "a=1"),
        ("#!ipxe\nchain http://x/vmlinuz b=2\n", "b=2"),
        ("#!ipxe\nkernel ${base}/vmlinuz\ninitrd ${base}/initramfs.img\nboot\n", ""),
        ("#!ipxe\necho no kernel here\n", ""),
    ],
)
def test_script_cmdline(script: str, want: str) -> None:
    assert netboot.script_cmdline(script) == want


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("console=ttyS0 quiet hostos.image=img-7\n", {"console": "ttyS0", "hostos.image": "img-7"}),
        ("hostos.node=a hostos.node=b", {"hostos.node": "b"}),  # as the kernel and /init
        ("hostos.site=a=b", {"hostos.site": "a=b"}),
        ("", {}),
    ],
)
def test_parse_cmdline(text: str, want: dict[str, str]) -> None:
    assert netboot.parse_cmdline(text) == want


@pytest.mark.parametrize(
    ("args", "want"),
    [
        ({"BOOTIF": "01-52-54-00-AB-CD-EF"}, "52-54-00-ab-cd-ef"),
        ({"BOOTIF": "01-52-54-00-AB-CD-EF", "hostos.node": "cn001"}, "cn001"),
        ({"BOOTIF": "garbage"}, None),
        ({"BOOTIF": "01-52-54"}, None),
        ({"hostos.node": ""}, None),
        ({}, None),
    ],
)
def test_node_id(args: dict[str, str], want: str | None) -> None:
    assert netboot.node_id(args) == want


def test_proc_cmdline(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("console=ttyS0 quiet hostos.image=img-7 BOOTIF=01-52-54-00-AB-CD-EF\n")
    args = netboot.proc_cmdline(str(cmdline))
    assert args[Arg.IMAGE] == "img-7"
    assert netboot.node_id(args) == "52-54-00-ab-cd-ef"
    assert netboot.proc_cmdline(str(tmp_path / "missing")) == {}


def test_image_cmdline(tmp_path: Path) -> None:
    assert netboot.image_cmdline(tmp_path) == ""
    (tmp_path / netboot.IPXE).write_text(netboot.image_script("6.1", "sha256:ab", "quiet a=1"))
    assert netboot.image_cmdline(tmp_path) == "quiet a=1"


# -- write → read ---------------------------------------------------------------------------


@pytest.mark.parametrize("cmdline", ["", "console=ttyS0", "console=tty0  console=ttyS0,115200"])
def test_image_script_round_trip(cmdline: str) -> None:
    script = netboot.image_script("6.1", "sha256:ab", cmdline)
    assert netboot.script_cmdline(script) == " ".join(cmdline.split())


@pytest.mark.parametrize("token", [None, "hn1.cn001.secret"])
def test_node_script_round_trip(token: str | None) -> None:
    boot = NodeBoot("http://s:8080", "g7", "cn001", "52-54-00-12-34-56", "quiet", token=token)
    args = netboot.script_args(netboot.node_script(boot))
    assert args[Arg.NODE] == "cn001"
    assert args[Arg.SERVER] == "http://s:8080"
    assert args[Arg.IMAGE] == "g7"
    assert args.get(Arg.TOKEN) == token
    assert netboot.node_id({**args, Arg.NODE: ""}) == "52-54-00-12-34-56"
    assert netboot.script_cmdline(netboot.node_script(boot)).split()[0] == "quiet"


def test_the_image_arguments_lose_to_ours() -> None:
    args = netboot.script_args(netboot.node_script(BOOT))
    assert args[Arg.NODE] == "cn001" and "x" not in args.values()


# -- /init reads the same names ---------------------------------------------------------------


def init_names() -> set[str]:
    """The argument names in the case patterns of /init's parse_cmdline."""
    text = INIT.read_text()
    body = text[text.index("parse_cmdline() {") : text.index("\n}\n", text.index("parse_cmdline"))]
    return {m.group(1) for m in re.finditer(r"^\s+([\w.]+)(?:=\*)?\)", body, re.M)}


def test_init_reads_the_argument_names() -> None:
    assert init_names() == set(Arg) - {Arg.IMAGE, Arg.INITRD}

"""The pure parts of /init (kernel command line, ip=, site specs), run in busybox sh by
sourcing the script with HOSTOS_INIT_SOURCED=1, which defines the functions and runs nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hostos.image import netboot
from hostos.image.netboot import NodeBoot

INIT = Path(__file__).resolve().parents[2] / "hostos" / "image" / "init" / "init"
BUSYBOX = shutil.which("busybox")

pytestmark = pytest.mark.skipif(BUSYBOX is None, reason="needs busybox (scripts/setup installs it)")


def sh(script: str) -> str:
    """Run script after sourcing /init; its stdout."""
    assert BUSYBOX is not None
    done = subprocess.run(
        [BUSYBOX, "sh", "-c", f'. "{INIT}"\n{script}'],
        check=True,
        capture_output=True,
        text=True,
        env={"HOSTOS_INIT_SOURCED": "1", "PATH": "/usr/bin:/bin"},
    )
    return done.stdout


def variables(script: str, names: str) -> dict[str, str]:
    shown = " ".join(f"{n}=[${n}]" for n in names.split())
    out = sh(f'{script}\necho "{shown}"').strip()
    found = {}
    for item in out.split("] "):
        key, _, value = item.partition("=[")
        found[key] = value.removesuffix("]")
    return found


def test_cmdline_of_a_server_boot_script() -> None:
    """What the server's boot script passes (hostos.image.netboot) is what /init reads."""
    boot = NodeBoot("http://s:8080", "g7", "cn001", "52-54-00-12-34-56", "quiet", token="t")
    got = variables(
        f"parse_cmdline '{' '.join(netboot.node_args(boot))}'",
        "HOSTOS_NODE HOSTOS_SERVER HOSTOS_TOKEN BOOTIF",
    )
    assert got == {
        "HOSTOS_NODE": "cn001",
        "HOSTOS_SERVER": "http://s:8080",
        "HOSTOS_TOKEN": "t",
        "BOOTIF": "01-52-54-00-12-34-56",
    }


def test_cmdline_sets_node_role_site_and_flags() -> None:
    got = variables(
        "parse_cmdline 'BOOT_IMAGE=x console=ttyS0 hostos.node=cn001 hostos.role=compute "
        "hostos.site=nfs://10.0.2.2/export/site hostos.rescue=1 hostos.engine=docker "
        "ip=dhcp BOOTIF=01-52-54-00-12-34-56 hostos.shell'",
        "HOSTOS_NODE HOSTOS_ROLE HOSTOS_SITE HOSTOS_RESCUE HOSTOS_ENGINE IP_PARAM BOOTIF "
        "HOSTOS_SHELL",
    )
    assert got == {
        "HOSTOS_NODE": "cn001",
        "HOSTOS_ROLE": "compute",
        "HOSTOS_SITE": "nfs://10.0.2.2/export/site",
        "HOSTOS_RESCUE": "1",
        "HOSTOS_ENGINE": "docker",
        "IP_PARAM": "dhcp",
        "BOOTIF": "01-52-54-00-12-34-56",
        "HOSTOS_SHELL": "1",
    }


def test_cmdline_later_words_win_and_flags_read_yes_no() -> None:
    got = variables(
        "parse_cmdline 'hostos.node=a hostos.node=b hostos.rescue=no'", "HOSTOS_NODE HOSTOS_RESCUE"
    )
    assert got == {"HOSTOS_NODE": "b", "HOSTOS_RESCUE": "0"}


def test_defaults_without_hostos_words() -> None:
    got = variables(
        "parse_cmdline 'quiet console=ttyS0'",
        "HOSTOS_ENGINE HOSTOS_RESCUE HOSTOS_SITE_OPTS HOSTOS_SITE_WAIT",
    )
    assert got == {
        "HOSTOS_ENGINE": "podman",
        "HOSTOS_RESCUE": "0",
        "HOSTOS_SITE_OPTS": "vers=4.1,soft,timeo=50,retrans=3",
        "HOSTOS_SITE_WAIT": "0",
    }


@pytest.mark.parametrize(
    ("mask", "prefix"),
    [
        ("255.255.255.0", "24"),
        ("255.255.0.0", "16"),
        ("255.255.255.252", "30"),
        ("255.255.255.255", "32"),
        ("0.0.0.0", "0"),
        ("255.255.240.0", "20"),
        ("24", "24"),
    ],
)
def test_mask2prefix(mask: str, prefix: str) -> None:
    assert sh(f"mask2prefix {mask}").strip() == prefix


@pytest.mark.parametrize("mask", ["255.0.255.0x", "abc", "", "255.255.255.7"])
def test_mask2prefix_refuses(mask: str) -> None:
    assert sh(f"mask2prefix '{mask}' || echo refused").strip() == "refused"


IP_VARS = "IP_MODE IP_ADDR IP_PREFIX IP_GW IP_HOSTNAME IP_DEV IP_DNS"


@pytest.mark.parametrize(
    ("param", "want"),
    [
        (
            "10.0.2.15::10.0.2.2:255.255.255.0::eth0:off",
            {
                "IP_MODE": "static",
                "IP_ADDR": "10.0.2.15",
                "IP_PREFIX": "24",
                "IP_GW": "10.0.2.2",
                "IP_HOSTNAME": "",
                "IP_DEV": "eth0",
                "IP_DNS": "",
            },
        ),
        (
            "192.168.1.7:192.168.1.1:192.168.1.1:255.255.0.0:cn001:ens3:none:1.1.1.1:9.9.9.9",
            {
                "IP_MODE": "static",
                "IP_ADDR": "192.168.1.7",
                "IP_PREFIX": "16",
                "IP_GW": "192.168.1.1",
                "IP_HOSTNAME": "cn001",
                "IP_DEV": "ens3",
                "IP_DNS": "1.1.1.1 9.9.9.9",
            },
        ),
        (
            "10.0.0.5:::::eth1",
            {
                "IP_MODE": "static",
                "IP_ADDR": "10.0.0.5",
                "IP_PREFIX": "24",
                "IP_GW": "",
                "IP_HOSTNAME": "",
                "IP_DEV": "eth1",
                "IP_DNS": "",
            },
        ),
        (
            "dhcp",
            {
                "IP_MODE": "dhcp",
                "IP_ADDR": "",
                "IP_PREFIX": "",
                "IP_GW": "",
                "IP_HOSTNAME": "",
                "IP_DEV": "",
                "IP_DNS": "",
            },
        ),
        (
            "",
            {
                "IP_MODE": "dhcp",
                "IP_ADDR": "",
                "IP_PREFIX": "",
                "IP_GW": "",
                "IP_HOSTNAME": "",
                "IP_DEV": "",
                "IP_DNS": "",
            },
        ),
        (
            "off",
            {
                "IP_MODE": "off",
                "IP_ADDR": "",
                "IP_PREFIX": "",
                "IP_GW": "",
                "IP_HOSTNAME": "",
                "IP_DEV": "",
                "IP_DNS": "",
            },
        ),
        (
            ":::::eth0:dhcp",
            {
                "IP_MODE": "dhcp",
                "IP_ADDR": "",
                "IP_PREFIX": "",
                "IP_GW": "",
                "IP_HOSTNAME": "",
                "IP_DEV": "eth0",
                "IP_DNS": "",
            },
        ),
    ],
)
def test_parse_ip(param: str, want: dict[str, str]) -> None:
    assert variables(f"parse_ip '{param}'", IP_VARS) == want


@pytest.mark.parametrize(
    "param", ["bogus", "10.0.2.15::10.0.2.2:255.0.255.0::eth0:off", "10.0.2.15:::::eth0:static"]
)
def test_parse_ip_refuses(param: str) -> None:
    assert sh(f"parse_ip '{param}' || echo refused").strip() == "refused"


@pytest.mark.parametrize(
    ("spec", "kind", "server", "path"),
    [
        ("nfs://10.0.2.2/export/site", "nfs", "10.0.2.2", "/export/site"),
        ("nfs://mgmt01/", "nfs", "mgmt01", "/"),
        ("nfs://mgmt01", "nfs", "mgmt01", "/"),
        ("10.0.2.2:/export/site", "nfs", "10.0.2.2", "/export/site"),
        ("mgmt01:/", "nfs", "mgmt01", "/"),
        ("/etc/hostos/site", "local", "", "/etc/hostos/site"),
        ("http://mgmt01:8000/site", "url", "", "http://mgmt01:8000/site"),
    ],
)
def test_parse_site(spec: str, kind: str, server: str, path: str) -> None:
    got = variables(f"parse_site '{spec}'", "SITE_KIND SITE_SERVER SITE_PATH")
    assert got == {"SITE_KIND": kind, "SITE_SERVER": server, "SITE_PATH": path}


@pytest.mark.parametrize("spec", ["", "site", "nfs:///x", ":/export"])
def test_parse_site_refuses(spec: str) -> None:
    assert sh(f"parse_site '{spec}' || echo refused").strip() == "refused"


def test_bootif_mac() -> None:
    assert sh("bootif_mac 01-52-54-00-AB-CD-EF").strip() == "52:54:00:ab:cd:ef"
    assert sh("bootif_mac 52-54 || echo refused").strip() == "refused"


@pytest.mark.parametrize(
    ("cmdline", "want"),
    [
        ("hostos.node=cn001", "--node cn001 --engine podman"),
        ("hostos.role=login hostos.engine=docker", "--role login --engine docker"),
        ("hostos.node=cn001 hostos.role=login", "--node cn001 --engine podman"),
    ],
)
def test_supervisor_command(cmdline: str, want: str) -> None:
    out = sh(f"parse_cmdline '{cmdline}'; supervisor_command").strip()
    assert out == (
        f"hostos supervise /run/hostos/site {want} --podman-socket /run/podman/podman.sock"
    )


@pytest.mark.parametrize(
    ("cmdline", "want"),
    [
        (
            "hostos.node=cn001 hostos.server=http://10.0.0.1:8080",
            "--node cn001 --server http://10.0.0.1:8080",
        ),
        (
            "hostos.server=http://10.0.0.1:8080 BOOTIF=01-52-54-00-12-34-56",
            "--server http://10.0.0.1:8080",
        ),  # the agent takes the MAC from BOOTIF itself
        (
            "hostos.role=login hostos.server=http://s:80 hostos.node=n1",
            "--node n1 --server http://s:80",
        ),
    ],
)
def test_supervisor_command_with_a_server(cmdline: str, want: str) -> None:
    out = sh(f"parse_cmdline '{cmdline}'; supervisor_command").strip()
    assert out == (
        f"hostos supervise {want} --token-file /run/hostos/token "
        "--engine podman --podman-socket /run/podman/podman.sock"
    )


def test_a_server_node_without_a_name_uses_the_dhcp_host_name() -> None:
    out = sh(
        "parse_cmdline 'hostos.server=http://s:80'; DHCP_HOSTNAME=cn042; supervisor_command"
    ).strip()
    assert out.startswith("hostos supervise --node cn042 --server http://s:80 ")
    assert (
        sh("parse_cmdline 'hostos.server=http://s:80'; supervisor_command || echo none").strip()
        == "none"
    )


def test_the_token_from_the_command_line_goes_into_a_file_only_root_reads(tmp_path: Path) -> None:
    token = tmp_path / "run" / "token"
    out = sh(
        f"HOSTOS_TOKEN_FILE={token}; parse_cmdline 'hostos.token=hn1.n1.secret "
        "hostos.server=http://s:80'; log() { :; }; server_token; echo ok"
    ).strip()
    assert out == "ok"
    assert token.read_text() == "hn1.n1.secret\n"
    assert token.stat().st_mode & 0o777 == 0o600


def test_supervisor_command_falls_back_to_the_dhcp_host_name() -> None:
    assert "--node cn042 " in sh("DHCP_HOSTNAME=cn042; supervisor_command")
    assert sh("supervisor_command || echo none").strip() == "none"


def test_scripts_parse() -> None:
    """Every shell script of the init tree is valid busybox sh."""
    assert BUSYBOX is not None
    tree = INIT.parent
    scripts = [p for p in tree.rglob("*") if p.is_file() and p.read_bytes().startswith(b"#!")]
    assert len(scripts) >= 4
    for script in scripts:
        subprocess.run([BUSYBOX, "sh", "-n", str(script)], check=True)
        assert script.stat().st_mode & 0o111, f"{script} is not executable"

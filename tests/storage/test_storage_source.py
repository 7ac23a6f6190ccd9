"""Host-side: the storage source resolver, the verity table builder and the Rego source rule.

The in-guest counterpart (test_storage_source_guest.py) runs the same hostile sources against the
kernel; here the resolver runs over real /dev and /sys entries of this machine and over a scratch
tree of real device nodes (mknod), and the Rego rule is evaluated by regorus.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import replace
from pathlib import Path

import pytest
import regorus
from hypothesis import given, settings
from hypothesis import strategies as st

from guest.storage import (
    SOURCE_PATTERN,
    BlockDevice,
    StorageError,
    StorageSourceError,
    VerityParams,
    rego_module,
    resolve_layer_source,
    resolve_source,
    verity_table,
)
from guest.storage.pci import PCI_PATH_PATTERN

ROOT = "8e84b0591ff9fedfcf6c68d695e4246fcce892e0c6478fea6a52ae80c764b651"
SALT = "5a" * 32
OPTIONS = ["ro", "X-kata.dmverity-enabled=true", f"X-kata.dmverity.roothash={ROOT}",
           "X-kata.dmverity.hashoffset=69632", f"X-kata.dmverity.salt={SALT}",
           "X-kata.dmverity.no-superblock=true"]
PIN = {"roothash": ROOT, "hashoffset": "69632", "salt": SALT, "no-superblock": "true"}
INJECTED = f"/dev/vdc /dev/vdc 4096 4096 17 17 sha256 {'ab' * 32} - 0 /h"

GOOD = ["/dev/vda", "/dev/vdb", "/dev/sdz", "/dev/vdaa", "/dev/vdb1", "/dev/sdb15", "/dev/loop0",
        "/dev/loop7", "/dev/loop255"]
HOSTILE: list[object] = [
    INJECTED, INJECTED.replace(" ", "\n"), INJECTED.replace(" ", "\t"), "/dev/vdb 1 ignore_corruption",
    "/dev/vdb\n", "/dev/vdb\0", "/dev/vdb\0/../vda", " /dev/vdb", "/dev/vdb ", "/dev/../dev/vdb",
    "/dev/./vdb", "/dev//vdb", "//dev/vdb", "/dev/vdb/", "dev/vdb", "vdb", "", "/dev/vd", "/dev/VDB",
    "/dev/\uff56db", "/dev/vdb\u200b", "/dev/loop00", "/dev/loop1000", "/dev/sda0", "/dev/vdb01", "/dev/dm-0",
    "/dev/mapper/x", "/dev/null", "/dev/disk/by-id/virtio-x", "/sys/class/block/vdb", "/proc/self/fd/3", 17,
    None, ["/dev/vdb"],
]
PROBE = """package agent_policy
import future.keywords.if
default probe := false
probe if allow_erofs_layer_storage(input.container, input.storage)
"""


def _rego_allows(source: object) -> bool:
    engine = regorus.Engine()
    engine.add_policy("erofs_layers.rego", rego_module())
    engine.add_policy("probe.rego", PROBE)
    engine.set_input_json(json.dumps({"container": {"erofs_layers": [PIN]},
                                      "storage": {"driver": "erofs.multi-layer", "source": source,
                                                  "options": OPTIONS}}))
    try:
        return bool(engine.eval_rule("data.agent_policy.probe"))
    except RuntimeError:
        return False


def test_rego_repeats_the_resolver_pattern() -> None:
    m = re.search(r"^erofs_source_pattern := `([^`]*)`$", rego_module(), re.MULTILINE)
    assert m is not None and m.group(1) == SOURCE_PATTERN


@pytest.mark.parametrize("source", GOOD)
def test_policy_and_resolver_accept_canonical_device_paths(source: str) -> None:
    assert _rego_allows(source)
    assert re.fullmatch(SOURCE_PATTERN, source)


@pytest.mark.parametrize("source", HOSTILE, ids=repr)
def test_policy_and_resolver_refuse_hostile_sources(source: object) -> None:
    assert not _rego_allows(source)
    with pytest.raises(StorageSourceError) as e:
        resolve_source(source)  # type: ignore[arg-type]
    assert e.value.source == source
    assert e.value.reason == "not an allowed device path"
    assert repr(source) in str(e.value) and "\n" not in str(e.value) and "\0" not in str(e.value)


@settings(max_examples=150, deadline=None)
@given(st.one_of(
    st.text(alphabet=st.sampled_from("/devsdlop0179abz .\n\0\t-:"), max_size=14),
    st.sampled_from(GOOD).flatmap(lambda g: st.text(max_size=3).map(lambda t: g + t)),
))
def test_policy_and_resolver_agree_on_any_string(source: str) -> None:
    pci_path = re.fullmatch(PCI_PATH_PATTERN, source) is not None  # a hotplugged layer's source
    python_ok = re.fullmatch(SOURCE_PATTERN, source) is not None
    assert _rego_allows(source) == (python_ok or pci_path)
    if not python_ok and not pci_path:
        with pytest.raises(StorageSourceError):
            resolve_layer_source(source)


def test_rego_repeats_the_pci_path_pattern() -> None:
    m = re.search(r"^erofs_pci_source_pattern := `([^`]*)`$", rego_module(), re.MULTILINE)
    assert m is not None and m.group(1) == PCI_PATH_PATTERN
    assert _rego_allows("10/00") and _rego_allows("13/00")
    # A root-bus slot ("03") names the guest's own disks on q35: the rule refuses it as the resolver does.
    for hostile in ("03", "10", "10/00/../x", "10/00\n", "10 /00", "/10/00", "10/00/00/00/00", "1/0"):
        assert not _rego_allows(hostile)


def test_resolves_this_machines_block_devices() -> None:
    found = 0
    for entry in sorted(Path("/sys/class/block").glob("*")):
        node = Path("/dev") / entry.name
        if not re.fullmatch(SOURCE_PATTERN, str(node)) or not node.is_block_device() or node.is_symlink():
            continue
        device = resolve_source(str(node))
        rdev = os.stat(node).st_rdev
        assert (device.name, device.major, device.minor) == (entry.name, os.major(rdev), os.minor(rdev))
        assert device.number == (entry / "dev").read_text().strip()
        found += 1
    if not found:
        pytest.skip("no /dev/vd*, /dev/sd* or /dev/loop* block device on this machine")


# -- a scratch /dev and /sys/class/block with real device nodes ----------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    if os.geteuid() != 0:
        pytest.skip("mknod needs root")
    dev, sysfs = tmp_path / "dev", tmp_path / "sys"
    dev.mkdir()
    for name, number in (("vdb", (254, 16)), ("vdc", (254, 32)), ("loop3", (7, 3))):
        (sysfs / name).mkdir(parents=True)
        (sysfs / name / "dev").write_text(f"{number[0]}:{number[1]}\n")
        os.mknod(dev / name, stat.S_IFBLK | 0o600, os.makedev(*number))
    return dev, sysfs


def _resolve(tree: tuple[Path, Path], source: str) -> BlockDevice:
    return resolve_source(source, dev=tree[0], sys_class_block=tree[1])


def test_resolves_name_to_the_kernels_number(tree: tuple[Path, Path]) -> None:
    assert _resolve(tree, "/dev/vdb") == BlockDevice("vdb", 254, 16)
    assert _resolve(tree, "/dev/loop3").number == "7:3"


@pytest.mark.parametrize(("swap", "reason"), [
    ("symlink", "symbolic link"), ("symlink-same", "symbolic link"), ("regular", "not a block device"),
    ("char", "not a block device"), ("other-number", "the node is device 254:32, the kernel's vdb is 254:16"),
    ("missing", "device node is missing"), ("fifo", "not a block device"),
])
def test_node_must_be_the_kernels_block_device(tree: tuple[Path, Path], swap: str, reason: str) -> None:
    dev, _ = tree
    node = dev / "vdb"
    node.unlink()
    if swap == "symlink":
        node.symlink_to(dev / "vdc")
    elif swap == "symlink-same":
        os.mknod(dev / "alias", stat.S_IFBLK | 0o600, os.makedev(254, 16))
        node.symlink_to(dev / "alias")
    elif swap == "regular":
        node.write_bytes(b"\0" * 4096)
    elif swap == "char":
        os.mknod(node, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    elif swap == "other-number":
        os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(254, 32))
    elif swap == "fifo":
        os.mkfifo(node)
    with pytest.raises(StorageSourceError) as e:
        _resolve(tree, "/dev/vdb")
    assert reason in e.value.reason


@pytest.mark.parametrize("content", ["", "254:16 7:3\n", "-1:16\n", "254:16\n\n", "0x fe:10\n", "254 16\n",
                                     "99999999:1\n", "254:016\n", "4096:0\n", "\xff"])
def test_kernel_number_must_parse(tree: tuple[Path, Path], content: str) -> None:
    (tree[1] / "vdb" / "dev").write_text(content, encoding="latin-1")
    with pytest.raises(StorageSourceError):
        _resolve(tree, "/dev/vdb")


def test_name_unknown_to_the_kernel_is_refused(tree: tuple[Path, Path]) -> None:
    os.mknod(tree[0] / "vdq", stat.S_IFBLK | 0o600, os.makedev(254, 16))  # a node, but no such disk
    with pytest.raises(StorageSourceError) as e:
        _resolve(tree, "/dev/vdq")
    assert "no block device 'vdq'" in e.value.reason


# -- BlockDevice and the table builder -----------------------------------------------------------------


@pytest.mark.parametrize(("name", "major", "minor"), [
    ("vdb 1", 254, 16), ("vdb\n", 254, 16), ("../vdb", 254, 16), ("", 254, 16), ("dm-0", 253, 0),
    ("vdb", -1, 0), ("vdb", 4096, 0), ("vdb", 254, 1 << 20), ("vdb", True, 0), ("vdb", 254, "16"),
    ("vdb", 254.0, 16),
])
def test_block_device_refuses_values_the_kernel_did_not_give(name: str, major: object, minor: object) -> None:
    with pytest.raises(ValueError):
        BlockDevice(name, major, minor)  # type: ignore[arg-type]


def test_table_takes_only_a_resolved_device() -> None:
    params = VerityParams(root_hash=ROOT, salt=SALT, hash_offset=69632)
    with pytest.raises(TypeError):
        verity_table(params, "/dev/vdb")  # type: ignore[arg-type]
    table = verity_table(params, BlockDevice("loop3", 7, 3))
    assert table.params.split() == ["1", "7:3", "7:3", "4096", "4096", "17", "17", "sha256", ROOT, SALT]


def test_table_builder_refuses_a_word_that_is_not_one() -> None:
    # VerityParams validates on construction; if a value were ever altered afterwards, the table
    # builder still refuses to emit anything but the ten verity words.
    params = VerityParams(root_hash=ROOT, salt=SALT, hash_offset=69632)
    tampered = replace(params)
    object.__setattr__(tampered, "algorithm", "sha256 1 ignore_corruption")
    with pytest.raises(StorageError):
        verity_table(tampered, BlockDevice("vdb", 254, 16))

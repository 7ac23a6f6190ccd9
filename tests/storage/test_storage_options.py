"""Host-side: kata X-kata.dmverity.* option parsing, policy pinning and the Rego rule module."""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path

import pytest
import regorus
from hypothesis import given
from hypothesis import strategies as st

from guest.storage import (
    BlockDevice,
    PolicyDeniedError,
    StorageOptionError,
    StorageSourceError,
    VerityParams,
    check_pinned,
    mount_layer_storage,
    params_from_options,
    params_from_pin,
    pinned_for,
    rego_module,
    verity_table,
)
from guest.storage import dm as dmmod

ROOT = "8e84b0591ff9fedfcf6c68d695e4246fcce892e0c6478fea6a52ae80c764b651"
SALT = "5a" * 32
OPTIONS = ["ro", "X-kata.multi-layer=true", "X-kata.dmverity-enabled=true",
           f"X-kata.dmverity.roothash={ROOT}", "X-kata.dmverity.hashoffset=69632",
           f"X-kata.dmverity.salt={SALT}", "X-kata.dmverity.no-superblock=true"]
PIN = {"roothash": ROOT, "hashoffset": "69632", "salt": SALT, "no-superblock": "true"}


def test_options_parse_with_kata_defaults() -> None:
    p = params_from_options(OPTIONS)
    assert p == VerityParams(root_hash=ROOT, salt=SALT, hash_offset=69632, superblock=False)
    assert p.data_blocks == 17 and p.hash_start_block == 17
    assert params_from_pin(PIN) == p


def test_superblock_moves_hash_start_one_block() -> None:
    p = params_from_options([o for o in OPTIONS if "no-superblock" not in o])
    assert p is not None and p.superblock and p.hash_start_block == 18


def test_kernel_table_like_kata() -> None:
    p = params_from_pin(PIN)
    vdb = BlockDevice("vdb", 254, 16)
    t = verity_table(p, vdb)
    assert (t.start, t.length, t.type) == (0, 136, "verity")
    assert t.params == f"1 254:16 254:16 4096 4096 17 17 sha256 {ROOT} {SALT}"
    assert verity_table(params_from_pin({**PIN, "salt": ""}), vdb).params.endswith(" -")


def test_no_verity_options_means_none() -> None:
    assert params_from_options(["ro", "X-kata.multi-layer=true"]) is None


@pytest.mark.parametrize("bad", [
    [*OPTIONS, "X-kata.dmverity.roothash=" + "00" * 32],  # repeated key
    [*OPTIONS, "X-kata.dmverity.extra=1"],  # unknown key
    [o for o in OPTIONS if o != "X-kata.dmverity-enabled=true"],  # options without enabling
    [o.replace("69632", "69633") if "hashoffset" in o else o for o in OPTIONS],  # unaligned
    [o.replace(ROOT, ROOT.upper()) for o in OPTIONS],  # not lowercase hex
    [o.replace("true", "yes") if "no-superblock" in o else o for o in OPTIONS],
    [*OPTIONS, "X-kata.dmverity.algorithm=md5"],
    [*OPTIONS, "X-kata.dmverity.blocksize=3000"],
    [o for o in OPTIONS if "roothash" not in o],
])
def test_malformed_options_are_refused(bad: list[str]) -> None:
    with pytest.raises(StorageOptionError):
        params_from_options(bad)


@given(st.lists(st.text(max_size=80), max_size=12))
def test_option_parser_only_raises_typed_errors(options: list[str]) -> None:
    with contextlib.suppress(StorageOptionError):
        params_from_options(options)


def test_pin_mismatch_names_each_field() -> None:
    pinned = params_from_pin(PIN)
    requested = VerityParams(root_hash="00" * 32, salt="", hash_offset=69632, superblock=False)
    with pytest.raises(PolicyDeniedError) as e:
        check_pinned(requested, pinned)
    assert set(e.value.mismatches) == {"root_hash", "salt"}
    assert e.value.grpc_status == "PERMISSION_DENIED"
    check_pinned(pinned, pinned)


def test_dm_ioctl_layout() -> None:
    assert dmmod._DM_IOCTL.size == 312
    assert dmmod._IOWR | dmmod.DM_DEV_CREATE == 0xC138FD03  # _IOWR(0xfd, 3, struct dm_ioctl)
    # new_encode_dev: major 254, minor 300
    dev = (300 & 0xFF) | (254 << 8) | ((300 & ~0xFF) << 12)
    assert dmmod._decode_dev(dev) == (254, 300)
    raw = struct.pack("=QI", 0, 0)
    assert raw  # the "no devices" marker is a zero dev




PROBE = """package agent_policy
import future.keywords.if
default probe := false
probe if allow_erofs_layer_storage(input.container, input.storage)
"""


def _allowed(layers: list[dict[str, str]], options: list[str] | None = None,
             driver: str = "erofs.multi-layer", source: object = "/dev/vdb") -> bool:
    engine = regorus.Engine()
    engine.add_policy("erofs_layers.rego", rego_module())
    engine.add_policy("probe.rego", PROBE)
    engine.set_input_json(json.dumps({"container": {"erofs_layers": layers},
                                      "storage": {"driver": driver, "source": source,
                                                  "options": options or OPTIONS}}))
    try:
        return bool(engine.eval_rule("data.agent_policy.probe"))
    except RuntimeError:
        return False  # evaluation errors (e.g. conflicting repeated options) deny


def test_rego_allows_exactly_the_pinned_layer() -> None:
    assert _allowed([PIN])
    assert _allowed([{**PIN, "roothash": "00" * 32}, PIN])  # any one pinned layer


@pytest.mark.parametrize("change", [
    {"roothash": "00" * 32}, {"salt": ""}, {"hashoffset": "4096"}, {"no-superblock": "false"},
    {"blocksize": "512"}, {"algorithm": "sha512"}, {"hashtype": "0"},
])
def test_rego_denies_any_differing_field(change: dict[str, str]) -> None:
    assert not _allowed([{**PIN, **change}])


@pytest.mark.parametrize("options", [
    [o for o in OPTIONS if o != "X-kata.dmverity-enabled=true"],
    [*OPTIONS, "X-kata.dmverity.extra=1"],
    [*OPTIONS, "X-kata.dmverity.roothash=" + "00" * 32],
    [*OPTIONS, "nosuid"],
])
def test_rego_denies_malformed_storages(options: list[str]) -> None:
    assert not _allowed([PIN], options)


def test_rego_denies_other_drivers_and_empty_pins() -> None:
    assert not _allowed([PIN], driver="virtio-blk")
    assert not _allowed([])


def test_pinned_for_selects_by_root_and_denies_unknown_roots() -> None:
    other = {**PIN, "roothash": "11" * 32}
    requested = params_from_options(OPTIONS)
    assert requested is not None
    assert pinned_for(requested, [other, PIN]) == params_from_pin(PIN)
    with pytest.raises(PolicyDeniedError):
        pinned_for(requested, [other])
    with pytest.raises(PolicyDeniedError):
        pinned_for(requested, [])


def test_layer_storage_refused_before_touching_the_kernel(tmp_path: Path) -> None:
    class NoKernel(dmmod.DeviceMapper):
        def _ioctl(self, *a: object, **k: object) -> tuple[tuple[object, ...], bytes]:
            raise AssertionError("device-mapper must not be called for a refused request")

    dev = str(tmp_path / "no-such-device")
    with pytest.raises(StorageOptionError):
        mount_layer_storage("virtio-blk", dev, OPTIONS, tmp_path / "m", [PIN], dm=NoKernel())
    with pytest.raises(PolicyDeniedError):
        mount_layer_storage("erofs.multi-layer", dev, ["ro"], tmp_path / "m", [PIN], dm=NoKernel())
    with pytest.raises(PolicyDeniedError):
        mount_layer_storage("erofs.multi-layer", dev, OPTIONS, tmp_path / "m", [{**PIN, "salt": ""}],
                            dm=NoKernel())
    with pytest.raises(StorageSourceError):  # pinned parameters, but a source that is no device
        mount_layer_storage("erofs.multi-layer", dev, OPTIONS, tmp_path / "m", [PIN], dm=NoKernel())
    assert not (tmp_path / "m").exists()

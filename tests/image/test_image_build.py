"""Host side: the image builder's outputs, checked against veritysetup and cpio as oracles."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from attestation import initdata
from image.build import BuildError, BuildOptions, ImageDescription, build_image, cpio, default_cache_dir
from tools.vm.guest_tests import REPO, pod_image_dir

SCHEMA_KEYS = {"kernel", "initrd", "disk", "cmdline", "root_hash", "salt", "rootfs", "verity", "initdata",
               "build_seconds", "inputs_digest"}
INITDATA = b'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"policy.rego" = "package agent_policy"\n'


@pytest.fixture(scope="session")
def image_dir(request: pytest.FixtureRequest) -> Path:
    if shutil.which("mkfs.erofs") is None:
        pytest.skip("mkfs.erofs not installed (apt-get install erofs-utils)")
    if not list(Path("/boot").glob("vmlinuz-*-cloud-amd64")):
        pytest.skip("no guest kernel (apt-get install linux-image-cloud-amd64)")
    return pod_image_dir(request.config)


def test_description_schema(image_dir: Path) -> None:
    raw = json.loads((image_dir / "image.json").read_text())
    assert set(raw) >= SCHEMA_KEYS
    for key in ("kernel", "initrd", "disk"):
        assert (image_dir / raw[key]).is_file()
    assert raw["rootfs"] == "erofs" and raw["initdata"] is None
    assert len(raw["root_hash"]) == 64 and len(raw["salt"]) == 64 and len(raw["inputs_digest"]) == 64
    v = raw["verity"]
    assert v["hash_offset"] == v["data_blocks"] * v["data_block_size"]


@pytest.mark.interop
def test_root_hash_verifies_with_veritysetup(image_dir: Path, tmp_path: Path) -> None:
    if shutil.which("veritysetup") is None:
        pytest.skip("veritysetup not installed (apt-get install cryptsetup-bin)")
    desc = ImageDescription.load(image_dir / "image.json")
    disk = image_dir / desc.disk
    args = ["veritysetup", "verify", "--no-superblock", f"--salt={desc.salt}",
            f"--data-blocks={desc.verity.data_blocks}", f"--hash-offset={desc.verity.hash_offset}"]
    assert subprocess.run([*args, str(disk), str(disk), desc.root_hash], check=False).returncode == 0
    bad = tmp_path / "bad.img"
    shutil.copyfile(disk, bad)
    with open(bad, "r+b") as f:  # one flipped bit in the middle of the data area
        f.seek(desc.verity.hash_offset // 2)
        b = f.read(1)
        f.seek(desc.verity.hash_offset // 2)
        f.write(bytes([b[0] ^ 1]))
    proc = subprocess.run([*args, str(bad), str(bad), desc.root_hash], capture_output=True, check=False)
    assert proc.returncode != 0


def test_cmdline_table_is_the_verity_library_table(image_dir: Path) -> None:
    from image import verity

    desc = ImageDescription.load(image_dir / "image.json")
    v = desc.verity
    result = verity.VerityResult.describe(
        verity.VerityParams(salt=bytes.fromhex(desc.salt), superblock=False, data_blocks=v.data_blocks,
                            hash_offset=v.hash_offset), bytes.fromhex(desc.root_hash))
    table = verity.kernel_table(result, "/dev/vda", "/dev/vda")
    assert verity.dm_mod_create(table, name="dm-verity") in desc.cmdline


@pytest.mark.interop
def test_initramfs_is_a_newc_archive_cpio_reads(image_dir: Path) -> None:
    raw = (image_dir / "initrd.img").read_bytes()  # uncompressed: no inflate at boot
    proc = subprocess.run(["cpio", "-t", "--quiet"], input=raw, capture_output=True, check=True)
    names = set(proc.stdout.decode().split())
    assert {"init", "usr/bin/busybox", "usr/sbin/dmsetup", "etc/modules.load"} <= names
    assert any(n.endswith("dm-verity.ko") for n in names)
    # only what mapping the root and listening need; the rest is loaded from the verity root later
    assert not any(n.endswith(("overlay.ko", "dm-crypt.ko", "virtio_net.ko")) for n in names)
    desc = json.loads((image_dir / "image.json").read_text())
    assert {"overlay", "dm_crypt", "virtio_net"} <= set(desc["contents"]["deferred_modules"])
    assert set(desc["contents"]["deferred_modules"]) <= set(desc["contents"]["modules"])


def test_cpio_writer_rejects_escaping_names() -> None:
    for bad in ("/abs", "a/../../b", ""):
        with pytest.raises(ValueError):
            cpio.regular(bad, b"")
    entries = [cpio.directory("d"), cpio.regular("d/f", b"abc", 0o600), cpio.symlink("l", "d/f")]
    data = cpio.write_newc(entries)
    assert data.startswith(b"070701") and b"TRAILER!!!" in data and len(data) % 4 == 0


def _snapshot(tmp: Path) -> Path:
    """The committed tree (HEAD) as a git checkout, so concurrent edits cannot change the inputs."""
    snap = tmp / "repo"
    snap.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "HEAD"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(snap)], input=archive.stdout, check=True)
    subprocess.run(["git", "-C", str(snap), "init", "-q"], check=True)
    subprocess.run(["git", "-C", str(snap), "add", "-A", "-f"], check=True)
    return snap


@pytest.mark.slow
def test_two_builds_from_the_same_inputs_are_identical(tmp_path: Path) -> None:
    if shutil.which("mkfs.erofs") is None:
        pytest.skip("mkfs.erofs not installed")
    snap = _snapshot(tmp_path)
    descs = [build_image(BuildOptions(out=tmp_path / f"out{i}", repo=snap, cache_dir=None, quiet=True))
             for i in (1, 2)]
    assert descs[0].root_hash == descs[1].root_hash
    assert descs[0].inputs_digest == descs[1].inputs_digest and descs[0].cmdline == descs[1].cmdline
    for name in ("rootfs.img", "initrd.img", "vmlinuz"):
        assert (tmp_path / "out1" / name).read_bytes() == (tmp_path / "out2" / name).read_bytes()


def test_initdata_device_image(image_dir: Path, tmp_path: Path) -> None:
    toml = tmp_path / "initdata.toml"
    toml.write_bytes(INITDATA)
    out = tmp_path / "out"
    desc = build_image(BuildOptions(out=out, repo=REPO, initdata_toml=toml, cache_dir=default_cache_dir(),
                                    quiet=True))
    assert desc.initdata == "initdata.img"
    img = (out / "initdata.img").read_bytes()
    assert img[:8] == b"initdata" and len(img) % 512 == 0
    assert initdata.read_device(out / "initdata.img") == INITDATA
    assert json.loads((out / "image.json").read_text())["initdata"] == "initdata.img"


def test_malformed_initdata_writes_nothing(image_dir: Path, tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_bytes(b'version = "9"\n')
    out = tmp_path / "out"
    with pytest.raises(BuildError):
        build_image(BuildOptions(out=out, repo=REPO, initdata_toml=toml, cache_dir=default_cache_dir(),
                                 quiet=True))
    assert not out.exists()


def test_simulators_stay_out_of_the_image_unless_asked() -> None:
    from image.build.rootfs import project_files

    def names(testing: bool) -> set[str]:
        return {str(p.relative_to(REPO)) for p in project_files(REPO, testing=testing)}

    default, with_testing = names(False), names(True)
    assert "attestation/testing/simulated.py" in with_testing
    assert not any(n.startswith("attestation/testing/") for n in default)
    assert "attestation/providers/detect.py" in default and "common/files.py" in default

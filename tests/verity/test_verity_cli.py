"""``python -m image verity`` against ``veritysetup`` as a user runs them: same stdout, same bytes,
same exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SALT_S, data16, data257, run_veritysetup

pytestmark = pytest.mark.interop

REPO = Path(__file__).resolve().parents[2]
UUID = "12345678-1234-1234-1234-123456789abc"


def ours(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "image", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=120, check=False)


@pytest.mark.parametrize("options", [
    [f"--salt={SALT_S.hex()}", f"--uuid={UUID}"],
    [f"--salt={SALT_S.hex()}", "--no-superblock", "--format=0", "-h", "sha1"],
    ["--salt=-", f"--uuid={UUID}", "--hash=sha512", "--data-block-size=512", "--hash-block-size=1024"],
    ["-s", "", f"--uuid={UUID}", "--hash-offset=8192", "--data-blocks=200"],
    ["--salt", "ABCD", "--uuid", UUID.upper(), "--hash", "SHA256"],
], ids=["default", "sha1-format0-nosb", "sha512-small", "offset-datablocks", "spellings"])
def test_format_stdout_and_bytes(veritysetup: str, tmp_path: Path, options: list[str]) -> None:
    (tmp_path / "data").write_bytes(data257())
    oracle = run_veritysetup(veritysetup, "format", str(tmp_path / "data"), str(tmp_path / "v.hash"),
                             *options, f"--root-hash-file={tmp_path / 'v.root'}")
    mine = ours("verity", "format", str(tmp_path / "data"), str(tmp_path / "o.hash"), *options,
                f"--root-hash-file={tmp_path / 'o.root'}")
    assert oracle.returncode == mine.returncode == 0, mine.stderr
    assert mine.stdout == oracle.stdout.replace("v.hash", "o.hash")
    assert (tmp_path / "o.hash").read_bytes() == (tmp_path / "v.hash").read_bytes()
    assert (tmp_path / "o.root").read_bytes() == (tmp_path / "v.root").read_bytes()
    assert os.stat(tmp_path / "o.hash").st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "o.root").st_mode & 0o777 == 0o600


def test_verify_exit_codes_match(veritysetup: str, tmp_path: Path) -> None:
    data, hash_path = tmp_path / "data", tmp_path / "hash"
    data.write_bytes(data16())
    formatted = ours("verity", "format", str(data), str(hash_path), f"--salt={SALT_S.hex()}",
                     f"--root-hash-file={tmp_path / 'root'}")
    assert formatted.returncode == 0, formatted.stderr
    root = (tmp_path / "root").read_text()
    wrong = ("0" if root[0] != "0" else "1") + root[1:]
    for args, expected_rc in ([root], 0), ([wrong], 1), (["--root-hash-file", str(tmp_path / "root")], 0), (
            ["zz"], 1):
        oracle = run_veritysetup(veritysetup, "verify", str(data), str(hash_path), *args)
        mine = ours("verity", "verify", str(data), str(hash_path), *args)
        assert oracle.returncode == mine.returncode == expected_rc, (args, oracle.stderr, mine.stderr)
    # one flipped data byte: exit code 2 and the same message from both
    with open(data, "r+b") as f:
        f.seek(12345)
        f.write(b"\xff" if f.read(1) != b"\xff" else b"\0")
    oracle = run_veritysetup(veritysetup, "verify", str(data), str(hash_path), root)
    mine = ours("verity", "verify", str(data), str(hash_path), root)
    assert oracle.returncode == mine.returncode == 2
    expected = "Verification failed at position 12288.\nVerification of data area failed.\n"
    assert mine.stderr == oracle.stderr == expected


def test_verify_verbose_and_package_entry_point(tmp_path: Path) -> None:
    (tmp_path / "data").write_bytes(data16())
    fmt = subprocess.run([sys.executable, "-m", "image.verity", "format", str(tmp_path / "data"),
                          str(tmp_path / "hash"), "--salt=-"], capture_output=True, text=True, cwd=REPO,
                         timeout=60, check=True)
    root = next(line.split("\t")[1] for line in fmt.stdout.splitlines() if line.startswith("Root hash"))
    mine = ours("verity", "verify", str(tmp_path / "data"), str(tmp_path / "hash"), root, "-v")
    assert (mine.returncode, mine.stdout) == (0, "Command successful.\n")


@pytest.mark.parametrize("options", [
    ["--data-block-size=256"], ["--data-block-size=3000"], ["--hash-block-size=1048576"], ["--format=2"],
    ["--salt=abc"], ["--salt=0G"], ["--salt=" + "ab" * 257], ["--uuid=bad"],
    ["--uuid=12345678123412341234123456789abc"], ["--hash-offset=100"], ["--hash=stribog256"],
    ["--data-blocks=17"],
])
def test_rejections_match_and_write_nothing(veritysetup: str, tmp_path: Path, options: list[str]) -> None:
    (tmp_path / "data").write_bytes(data16())
    data = str(tmp_path / "data")
    oracle = run_veritysetup(veritysetup, "format", data, str(tmp_path / "v.hash"), *options)
    mine = ours("verity", "format", data, str(tmp_path / "o.hash"), *options)
    assert oracle.returncode == mine.returncode == 1, (oracle.stderr, mine.stderr)
    assert mine.stdout == ""
    assert not (tmp_path / "o.hash").exists()  # veritysetup leaves an empty or partial file; we do not
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "v.hash"]


def test_dump_reads_superblock(veritysetup: str, tmp_path: Path) -> None:
    (tmp_path / "data").write_bytes(data16())
    run_veritysetup(veritysetup, "format", str(tmp_path / "data"), str(tmp_path / "hash"),
                    f"--salt={SALT_S.hex()}", f"--uuid={UUID}", "--hash=sha1")
    mine = ours("verity", "dump", str(tmp_path / "hash"))
    assert mine.returncode == 0
    assert f"UUID:            \t{UUID}\n" in mine.stdout
    assert "Hash algorithm:  \tsha1\n" in mine.stdout
    assert f"Salt:            \t{SALT_S.hex()}\n" in mine.stdout
    bad = ours("verity", "dump", str(tmp_path / "data"))
    assert bad.returncode == 1 and "signature" in bad.stderr


def test_table_from_superblock_and_dm_mod_create(tmp_path: Path) -> None:
    path = tmp_path / "combined"
    path.write_bytes(data16())
    fmt = ours("verity", "format", str(path), str(path), f"--salt={SALT_S.hex()}", "--hash-offset=65536",
               "--data-blocks=16", f"--uuid={UUID}")
    assert fmt.returncode == 0, fmt.stderr
    root = "895fe938075b5140d130de8f6c40d6577899d7f589eaa8fe3d860923e2475ec5"
    table = ours("verity", "table", "/dev/vda", "/dev/vda", "--root-hash", root, "--from-superblock",
                 str(path), "--hash-offset=65536")
    assert table.stdout == f"0 128 verity 1 /dev/vda /dev/vda 4096 4096 16 17 sha256 {root} {SALT_S.hex()}\n"
    kata = ours("verity", "table", "/dev/vda1", "/dev/vda2", "--root-hash", root, "--salt", SALT_S.hex(),
                "--data-blocks=16", "--no-superblock", "--dm-mod-create")
    assert kata.stdout == ('dm-mod.create="dm-verity,,,ro,0 128 verity 1 /dev/vda1 /dev/vda2 4096 4096 16 0 '
                           f'sha256 {root} {SALT_S.hex()}"\n')


def test_dispatcher_lists_verity() -> None:
    helped = ours("--help")
    assert helped.returncode == 0 and "verity" in helped.stdout
    missing = ours("no-such-command")
    assert missing.returncode == 2

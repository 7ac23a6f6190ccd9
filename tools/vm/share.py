"""The test share: the repo, ../shared and pytest, as a read-only erofs disk for the guest.

Built per run (a few seconds), so tests always run the working tree's code, while the image
itself stays cached by its inputs. Layout on the disk (mounted at /mnt/share in the guest)::

    main/       repo files (git ls-files: tracked and untracked-but-not-ignored)
    shared/     ../shared (test vectors are found at main/../shared as on the host)
    site/       pytest and its plugins from the host venv
    run         what the guest init executes when the command line carries cg.test=1
    selection.json  pytest arguments for this run
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from image.build.elf import library_closure
from image.build.erofs import GUEST_PYTHON, make_erofs
from image.build.rootfs import distribution_closure

__all__ = ["GUEST_MOUNT", "RESULTS_PORT", "TEST_DISTRIBUTIONS", "build_share"]

GUEST_MOUNT = "/mnt/share"
RESULTS_PORT = "cg.results"
TEST_DISTRIBUTIONS = ("pytest", "pytest-asyncio", "hypothesis")

RUN_SCRIPT = f"""#!/bin/sh
# Runs in the guest (cg.test=1): pytest over the share, results to the {RESULTS_PORT} port.
mkdir -p /tmp/cg-test && cd /tmp/cg-test || exit 1
export CG_IN_GUEST=1 PYTHONPATH={GUEST_MOUNT}/main:{GUEST_MOUNT}/site PYTHONDONTWRITEBYTECODE=1
export HYPOTHESIS_STORAGE_DIRECTORY=/tmp/cg-test/.hypothesis
python3 {GUEST_MOUNT}/main/tools/vm/guest_runner.py {GUEST_MOUNT}/selection.json
echo "MARK guest-tests exit=$?"
"""


def _repo_files(repo: Path) -> list[str]:
    proc = subprocess.run(["git", "-C", str(repo), "ls-files", "-z", "-co", "--exclude-standard"],
                          capture_output=True, check=True)
    return sorted(p for p in proc.stdout.decode().split("\0") if p)


def _copy(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        dest.symlink_to(src.readlink())
    elif src.is_file():
        shutil.copyfile(src, dest)


# runc: the second OCI runtime timed against crun by tools/bench/pod (its libraries are in the image).
ORACLES = (Path("/sbin/veritysetup"), Path("/sbin/dmsetup"), Path("/usr/sbin/runc"))


def _add_oracles(dest: Path) -> None:
    """veritysetup and dmsetup with their libraries: test oracles only, never in the image.

    Run in the guest as ``oracle/run <tool> args`` (the script uses the bundled loader)."""
    present = [b for b in ORACLES if b.is_file()]
    if not present:
        return
    (dest / "bin").mkdir(parents=True)
    (dest / "lib").mkdir()
    for b in present:
        shutil.copyfile(b, dest / "bin" / b.name)
        (dest / "bin" / b.name).chmod(0o755)
    for path, src in library_closure(present).items():
        shutil.copyfile(src, dest / "lib" / Path(path).name)
        (dest / "lib" / Path(path).name).chmod(0o755)
    (dest / "run").write_text('#!/bin/sh\nd=$(dirname "$0"); t=$1; shift\n'
                              'export DM_DISABLE_UDEV=1\n'
                              'exec "$d/lib/ld-linux-x86-64.so.2" --library-path "$d/lib" "$d/bin/$t" "$@"\n')
    (dest / "run").chmod(0o755)


def build_share(repo: Path, out: Path, pytest_args: list[str]) -> Path:
    """Write the share image to ``out`` (a file) and return it."""
    stage = out.parent / (out.name + ".d")
    if stage.exists():
        shutil.rmtree(stage)
    for rel in _repo_files(repo):
        if not rel.startswith((".venv/", ".git/")) and "__pycache__" not in rel:
            _copy(repo / rel, stage / "main" / rel)
    shared = repo.parent / "shared"
    if shared.is_dir():
        shutil.copytree(shared, stage / "shared", symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", ".git"))
    for dist in distribution_closure(list(TEST_DISTRIBUTIONS)):
        for f in dist.files or []:
            rel = str(f)
            if rel.startswith("..") or "__pycache__" in rel:
                continue
            _copy(Path(str(dist.locate_file(f))), stage / "site" / rel)
    _add_oracles(stage / "oracle")
    (stage / "run").write_text(RUN_SCRIPT)
    (stage / "run").chmod(0o755)
    (stage / "selection.json").write_text(json.dumps({"args": pytest_args}))
    # Bytecode so the read-only share imports quickly; other helpers' half-written files may not
    # compile, which must not stop the run (pytest reports them).
    subprocess.run([str(GUEST_PYTHON), "-I", "-m", "compileall", "-q", "-j", "0", "--invalidation-mode",
                    "unchecked-hash", "-s", str(stage), "-p", GUEST_MOUNT, str(stage / "main"),
                    str(stage / "site")],
                   capture_output=True, check=False)
    make_erofs(stage, out, epoch=0, compression="")
    shutil.rmtree(stage)
    return out

"""Shim pieces without containerd: protos, input validation, configuration, QEMU command lines
(against the Kata configuration Contrast ships), spec conversion, events."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attestation import initdata as initdata_format
from image.build import ImageDescription, VerityParams
from runtime import validate
from runtime.config import Config, load_config, render
from runtime.errors import ConfigError, InvalidInputError
from runtime.events import as_any
from runtime.podvm import VmLaunch, qemu_argv
from runtime.protocols import events_pb2, generate
from runtime.spec import spec_from_json

REPO = Path(__file__).resolve().parents[2]


def test_generated_modules_match_the_protos(tmp_path: Path) -> None:
    for path in generate.generate(tmp_path):
        rel = path.relative_to(tmp_path)
        assert path.read_bytes() == (REPO / rel).read_bytes(), (
            f"{rel} is stale: run python -m runtime.protocols.generate"
        )


@pytest.mark.parametrize("bad", ["", "../x", "a/b", "..", ".hidden", "a" * 77, "a\0b", "a b", "x..y"])
def test_ids_outside_containerds_rule_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        validate.check_id(bad)


def test_bundle_must_be_the_task_directory_without_links(tmp_path: Path) -> None:
    real = tmp_path / "real" / "t1"
    real.mkdir(parents=True)
    assert validate.check_bundle(str(real), "t1") == real
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(InvalidInputError, match=r"symbolic links"):
        validate.check_bundle(str(tmp_path / "link" / "t1"), "t1")
    with pytest.raises(InvalidInputError, match=r"task id"):
        validate.check_bundle(str(real), "t2")
    with pytest.raises(InvalidInputError, match=r"normalised"):
        validate.check_bundle(str(real) + "/../t1", "t1")


def test_spec_must_be_a_regular_file_in_the_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "t1"
    bundle.mkdir()
    (tmp_path / "secret").write_text("{}")
    (bundle / "config.json").symlink_to(tmp_path / "secret")
    with pytest.raises(InvalidInputError, match=r"regular file"):
        validate.read_spec(bundle)


def test_stdio_paths_must_be_fifos(tmp_path: Path) -> None:
    target = tmp_path / "host-file"
    target.write_text("precious")
    with pytest.raises(InvalidInputError, match=r"FIFO"):
        validate.check_fifo(str(target), "stdout")
    with pytest.raises(InvalidInputError, match=r"normalised"):
        validate.check_fifo(str(tmp_path / "x" / ".." / "host-file"), "stdout")
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    assert validate.check_fifo(str(fifo), "stdout") == fifo
    assert validate.check_fifo("", "stdin") is None
    assert target.read_text() == "precious"


def _config(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "rt.toml"
    path.write_text(text)
    return load_config(path)


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"image\.dir is required"):
        _config(tmp_path, "[hypervisor]\nvcpus = 1\n")
    with pytest.raises(ConfigError, match=r"unknown key hypervisor\.vcpu "):
        _config(tmp_path, '[image]\ndir = "/i"\n[hypervisor]\nvcpu = 1\n')
    with pytest.raises(ConfigError, match=r"hypervisor\.memory_mib must be a int"):
        _config(tmp_path, '[image]\ndir = "/i"\n[hypervisor]\nmemory_mib = "1G"\n')
    with pytest.raises(ConfigError, match=r"firmware is required"):
        _config(tmp_path, '[image]\ndir = "/i"\n[hypervisor]\ntee = "snp"\n')
    with pytest.raises(ConfigError, match=r"image\.mode"):
        _config(tmp_path, '[image]\ndir = "/i"\nmode = "host"\n')
    with pytest.raises(ConfigError, match=r"runtime\.emptydir_mode 'block-plain'"):
        _config(tmp_path, '[image]\ndir = "/i"\n[runtime]\nemptydir_mode = "block-plain"\n')
    with pytest.raises(ConfigError, match=r"runtime\.emptydir_size_mib -1"):
        _config(tmp_path, '[image]\ndir = "/i"\n[runtime]\nemptydir_size_mib = -1\n')
    cfg = _config(tmp_path, '[image]\ndir = "/i"\n')  # Kata's CoCo default: encrypted emptyDir disks
    assert (cfg.emptydir_mode, cfg.emptydir_size_mib) == ("block-encrypted", 0)


def test_rendered_config_loads(tmp_path: Path) -> None:
    (tmp_path / "rt.toml").write_text(render(Path("/images/x"), "guest-pull", Path("/etc/initdata.toml"),
                                             emptydir_mode="shared-fs", emptydir_size_mib=256))
    cfg = load_config(tmp_path / "rt.toml")
    got = (cfg.image_dir, cfg.image_mode, cfg.default_initdata, cfg.emptydir_mode, cfg.emptydir_size_mib)
    assert got == (
        Path("/images/x"),
        "guest-pull",
        Path("/etc/initdata.toml"),
        "shared-fs",
        256,
    )


def test_image_runtime_config_command(tmp_path: Path) -> None:
    image = tmp_path / "image"
    image.mkdir()
    (image / "image.json").write_text("{}")
    out = tmp_path / "rt.toml"
    proc = subprocess.run(
        [sys.executable, "-m", "image", "runtime-config", "--image", str(image), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    cfg = load_config(out)
    assert cfg.image_dir == image and cfg.image_mode == "host-erofs" and cfg.default_initdata is None


IMAGE = ImageDescription(
    kernel="vmlinuz",
    initrd="initrd.img",
    disk="rootfs.img",
    cmdline="console=hvc0 root=/dev/dm-0 roothash=ab",
    root_hash="ab",
    salt="cd",
    rootfs="erofs",
    verity=VerityParams("sha256", 4096, 4096, 1, 4096, 1, 1, False, "/dev/vda", "/dev/vda"),
    initdata=None,
    build_seconds=0.0,
    inputs_digest="00",
)
TOML = b'version = "0.1.0"\nalgorithm = "sha256"\n[data]\n"policy.rego" = "package agent_policy\\n"\n'


def _launch(tmp_path: Path, tee: str, accel: str) -> VmLaunch:
    cfg = Config(
        path=tmp_path / "rt.toml",
        image_dir=Path("/img"),
        tee=tee,
        firmware=None if tee == "simulated" else Path("/fw/OVMF.fd"),
    )
    return VmLaunch(
        config=cfg,
        image=IMAGE,
        initdata_digest=initdata_format.digest(TOML),
        initdata_image=tmp_path / "initdata.img",
        workdir=tmp_path,
        accel=accel,
    )


def _after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def test_snp_command_line_matches_contrasts_kata_configuration(tmp_path: Path) -> None:
    argv = qemu_argv(_launch(tmp_path, "snp", "kvm"))
    objects = _after(argv, "-object")
    snp = next(o for o in objects if o.startswith("sev-snp-guest,"))
    fields = dict(kv.split("=", 1) for kv in snp.split(",")[1:])
    assert int(fields["policy"], 16) == 196608  # snp_guest_policy
    assert base64.b64decode(fields["host-data"]) == hashlib.sha256(TOML).digest()
    machine = _after(argv, "-M")
    assert machine == ["q35,confidential-guest-support=tee0,memory-backend=ram0"]  # machine_type = q35
    assert _after(argv, "-bios") == ["/fw/OVMF.fd"]
    assert _after(argv, "-smp") == ["1"]  # default_vcpus
    # kernel_params replaced: exactly the measured command line, no test flag
    assert _after(argv, "-append") == [IMAGE.cmdline]
    assert _after(argv, "-accel") == ["kvm"]
    assert any("serial=initdata" in d for d in _after(argv, "-device"))


def test_tdx_command_line_pads_the_digest_into_mrconfigid(tmp_path: Path) -> None:
    argv = qemu_argv(_launch(tmp_path, "tdx", "kvm"))
    tdx = next(o for o in _after(argv, "-object") if o.startswith("tdx-guest,"))
    value = base64.b64decode(tdx.split("mrconfigid=", 1)[1])
    assert value == hashlib.sha256(TOML).digest() + bytes(16)
    assert _after(argv, "-append") == [IMAGE.cmdline]


def test_a_tee_needs_kvm(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs KVM"):
        qemu_argv(_launch(tmp_path, "snp", "tcg"))


def test_simulated_tee_puts_host_data_on_the_measured_cmdline(tmp_path: Path) -> None:
    argv = qemu_argv(_launch(tmp_path, "simulated", "tcg"))
    (cmdline,) = _after(argv, "-append")
    assert cmdline.startswith(IMAGE.cmdline + " ")
    assert f"cg.test.hostdata={hashlib.sha256(TOML).hexdigest()}" in cmdline.split()
    assert not any(o.startswith(("sev-snp-guest", "tdx-guest")) for o in _after(argv, "-object"))


def test_spec_json_becomes_the_agents_protobuf() -> None:
    spec = spec_from_json(
        b'{"ociVersion": "1.0.2", "process": {"args": ["sh", "-c", "echo hi"], "cwd": "/",'
        b' "user": {"uid": 0, "gid": 0}, "noNewPrivileges": true,'
        b' "capabilities": {"bounding": ["CAP_KILL"]}, "rlimits": [{"type": "RLIMIT_NOFILE",'
        b' "hard": 1024, "soft": 1024}]}, "root": {"path": "rootfs"},'
        b' "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],'
        b' "linux": {"namespaces": [{"type": "pid"}], "maskedPaths": ["/proc/kcore"],'
        b' "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]},'
        b' "annotations": {"a": "b"}, "unknownField": 1}'
    )
    assert spec.Version == "1.0.2"
    assert list(spec.Process.Args) == ["sh", "-c", "echo hi"]
    assert spec.Process.NoNewPrivileges and list(spec.Process.Capabilities.Bounding) == ["CAP_KILL"]
    assert spec.Process.Rlimits[0].Hard == 1024
    assert spec.Mounts[0].destination == "/proc"
    assert spec.Linux.UIDMappings[0].HostID == 1000
    assert list(spec.Linux.MaskedPaths) == ["/proc/kcore"]
    assert dict(spec.Annotations) == {"a": "b"}


def test_spec_with_wrong_types_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        spec_from_json(b'{"process": {"args": "sh"}}')
    with pytest.raises(InvalidInputError):
        spec_from_json(b'{"mounts": {}}')
    with pytest.raises(InvalidInputError):
        spec_from_json(b"not json")


def test_events_are_anys_named_by_their_full_name() -> None:
    from google.protobuf import any_pb2

    raw = as_any(events_pb2.TaskExit(container_id="c", id="c", exit_status=7))
    msg = any_pb2.Any.FromString(raw)
    assert msg.type_url == "containerd.events.TaskExit"
    assert events_pb2.TaskExit.FromString(msg.value).exit_status == 7


def test_agent_stats_become_cgroup_v2_metrics() -> None:
    from guest.protocols import agent_pb2
    from runtime.service import metrics_from_agent

    reply = agent_pb2.StatsContainerResponse()
    cg = reply.cgroup_stats
    cg.cpu_stats.cpu_usage.total_usage = 5_000_000  # ns
    cg.cpu_stats.cpu_usage.usage_in_usermode = 3_000_000
    cg.memory_stats.usage.usage = 4096
    cg.memory_stats.usage.limit = 1 << 20
    cg.memory_stats.stats["anon"] = 1234
    cg.memory_stats.stats["not_a_v2_field"] = 9
    cg.pids_stats.current = 2
    m = metrics_from_agent(reply)
    assert (m.cpu.usage_usec, m.cpu.user_usec) == (5000, 3000)
    assert (m.memory.usage, m.memory.usage_limit, m.memory.anon) == (4096, 1 << 20, 1234)
    assert m.pids.current == 2
    assert m.DESCRIPTOR.full_name == "io.containerd.cgroups.v2.Metrics"

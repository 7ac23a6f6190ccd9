"""The harness itself: QEMU argv, skip reasons, guest-item routing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tools.vm.qemu import Disk, SerialPort, VirtualMachine, host_timing_args


def test_argv_is_microvm_tcg_with_ports_and_disks(pod_image: Path, tmp_path: Path) -> None:
    vm = VirtualMachine(pod_image, extra_cmdline="cg.test=1", workdir=tmp_path,
                        disks=[Disk(tmp_path / "share.img", serial="cg-test-share")],
                        ports=[SerialPort("cg.hvsock"), SerialPort("cg.results", kind="file")])
    argv = vm.argv()
    assert argv[0] == "qemu-system-x86_64" and "tcg" in argv and "-no-reboot" in argv
    joined = " ".join(argv)
    assert "virtio-blk-device,drive=d0,serial=cg-test-share" in joined
    assert f"socket,id=c0,path={tmp_path}/port-cg.hvsock,server=on,wait=off" in joined
    assert "virtserialport,chardev=c1,name=cg.results" in joined
    assert vm.cmdline.startswith(vm.description.cmdline) and vm.cmdline.endswith("cg.test=1")


def test_host_timing_args_shape() -> None:
    arg = host_timing_args()
    assert arg == "" or (arg.startswith("tsc_early_khz=") and int(arg.split("=")[1]) > 0)


@pytest.mark.vm(guest=True)
def test_this_test_runs_inside_the_guest() -> None:
    import os

    assert os.environ.get("CG_IN_GUEST") == "1"
    assert Path("/proc/cmdline").read_text().count("dm-mod.create=") == 1

"""Host side: boot the built image under QEMU (TCG) — verity root, tampering, wrong root hash."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pytest

from image.build import ImageDescription
from tools.vm.guest_tests import run_in_guest
from tools.vm.hvsock import BridgeThread, connect
from tools.vm.qemu import Disk, SerialPort, VirtualMachine

pytestmark = pytest.mark.vm
TAMPER_TEST = "tests/image/test_image_guest.py::test_tampered_root_block_reads_fail_with_eio"


def test_boots_to_echo_agent_over_hybrid_vsock(pod_image: Path) -> None:
    with VirtualMachine(pod_image, extra_cmdline="cg.agent=echo", ports=[SerialPort("cg.hvsock")]) as vm:
        vm.wait_for(r"MARK agent-listening vsock:1024", 120)
        assert vm.workdir is not None
        hv = vm.workdir / "hvsock.sock"
        with BridgeThread(vm.port_path("cg.hvsock"), hv):
            with connect(hv, 1024) as s:
                for i in range(20):
                    s.sendall(b"ping %d" % i)
                    assert s.recv(64) == b"ping %d" % i
            with pytest.raises(ConnectionRefusedError):
                connect(hv, 4242)  # nothing listens there: refused without an OK line
            with connect(hv, 1024) as s:  # the bridge still serves after a refusal
                s.sendall(b"again")
                assert s.recv(64) == b"again"


def test_wrong_root_hash_fails_closed(pod_image: Path) -> None:
    desc = ImageDescription.load(pod_image / "image.json")
    wrong = f"{int(desc.root_hash, 16) ^ (1 << 200):064x}"
    cmdline = desc.cmdline.replace(desc.root_hash, wrong)
    assert cmdline != desc.cmdline
    with VirtualMachine(pod_image, base_cmdline=cmdline) as vm:  # default agent: the policy proxy
        vm.wait_exit(120)
        text = vm.text()
    assert "initramfs: FATAL: mount root" in text
    assert "agent-listening" not in text and "event=serving" not in text


def test_tampered_root_data_reads_fail_with_eio(pod_image: Path, tmp_path: Path) -> None:
    desc = ImageDescription.load(pod_image / "image.json")
    disk = tmp_path / "rootfs.img"
    shutil.copyfile(pod_image / desc.disk, disk)

    def tamper(vm: VirtualMachine) -> None:
        m = vm.wait_for(r"MARK tamper-ready block=(\d+)\r?\n", 300)  # whole line: no partial number
        offset = int(m.group(1)) * 4096 + 1234
        with open(disk, "r+b") as f:  # the hostile host rewrites one byte under the running guest
            f.seek(offset)
            byte = f.read(1)
            f.seek(offset)
            f.write(bytes([byte[0] ^ 0x40]))
        time.sleep(0)

    out = run_in_guest(pod_image, [TAMPER_TEST], extra_cmdline="cg.tamper=1", disk_override=disk,
                       on_console=tamper)
    assert TAMPER_TEST in out.results, f"{out.error}\n{out.console[-3000:]}"
    result = out.results[TAMPER_TEST]
    assert result["outcome"] == "passed", f"{result['longrepr']}\n{out.error}\n{out.console[-2000:]}"


def test_cmdline_pins_root_hash_and_salt(pod_image: Path) -> None:
    desc = ImageDescription.load(pod_image / "image.json")
    m = re.search(r'dm-mod\.create="dm-verity,,,ro,([^"]+)"', desc.cmdline)
    assert m is not None
    assert m.group(1).split()[-2:] == [desc.root_hash, desc.salt]
    assert "root=/dev/dm-0" in desc.cmdline.split() and "rootfstype=erofs" in desc.cmdline.split()


def test_policy_agent_answers_the_runtime_over_hybrid_vsock(pod_image: Path) -> None:
    """The default agent is ``python -m guest serve``; with the image's default policy (no
    initdata) a CreateContainer request from the host is answered PERMISSION_DENIED over ttrpc."""
    import struct

    from guest.ttrpc import Code, MessageType, Request, encode_frame
    from guest.ttrpc.messages import decode_response, encode_request

    with VirtualMachine(pod_image, ports=[SerialPort("cg.hvsock")]) as vm:
        vm.wait_for(r"event=serving listen=vsock://-1:1024", 180)
        assert vm.workdir is not None
        hv = vm.workdir / "hvsock.sock"
        with BridgeThread(vm.port_path("cg.hvsock"), hv), connect(hv, 1024, timeout=60) as s:
            body = encode_request(Request("grpc.AgentService", "CreateContainer", b""))
            s.sendall(encode_frame(1, MessageType.REQUEST, 0, body))
            header = b""
            while len(header) < 10:
                chunk = s.recv(10 - len(header))
                assert chunk, "agent closed the connection"
                header += chunk
            length, stream, mtype, _flags = struct.unpack(">IIBB", header)
            payload = b""
            while len(payload) < length:
                payload += s.recv(length - len(payload))
            assert (stream, mtype) == (1, MessageType.RESPONSE)
            assert decode_response(payload).status.code == Code.PERMISSION_DENIED


def test_policy_agent_reads_the_initdata_device_and_fails_closed_without_tee(pod_image: Path,
                                                                             tmp_path: Path) -> None:
    """The builder's initdata.img, attached as a disk, is found by ``guest serve``; with no TEE to
    bind its digest (HOST_DATA/MRCONFIGID) the measured policy is not installed and requests stay
    denied."""
    import struct

    from guest.ttrpc import Code, MessageType, Request, encode_frame
    from guest.ttrpc.messages import decode_response, encode_request
    from image.build import BuildOptions, build_image, default_cache_dir

    toml = tmp_path / "initdata.toml"
    toml.write_text('version = "0.1.0"\nalgorithm = "sha256"\n[data]\n'
                    '"policy.rego" = "package agent_policy\\ndefault CreateContainerRequest := true\\n"\n')
    out = tmp_path / "image"
    build_image(BuildOptions(out=out, repo=Path(__file__).resolve().parents[2], initdata_toml=toml,
                             cache_dir=default_cache_dir(), quiet=True))
    with VirtualMachine(out, disks=[Disk(out / "initdata.img")], ports=[SerialPort("cg.hvsock")]) as vm:
        vm.wait_for(r"event=serving listen=vsock", 180)
        assert re.search(r"event=measured_config_failed device=/dev/vdb", vm.text())
        assert vm.workdir is not None
        hv = vm.workdir / "hvsock.sock"
        with BridgeThread(vm.port_path("cg.hvsock"), hv), connect(hv, 1024, timeout=60) as s:
            s.sendall(encode_frame(1, MessageType.REQUEST, 0,
                                   encode_request(Request("grpc.AgentService", "CreateContainer", b""))))
            header = b""
            while len(header) < 10:
                chunk = s.recv(10 - len(header))
                assert chunk
                header += chunk
            length = struct.unpack(">IIBB", header)[0]
            payload = b""
            while len(payload) < length:
                payload += s.recv(length - len(payload))
            assert decode_response(payload).status.code == Code.PERMISSION_DENIED

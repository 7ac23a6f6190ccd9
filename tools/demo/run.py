"""The local end-to-end demo: Coordinator, data owner, a policed pod, mesh identities, one mTLS request.

Everything runs on loopback with simulated SEV-SNP evidence, in a temporary directory that is removed on
every exit path (normal end, failure, Ctrl-C, SIGTERM). Exit status 0 only if every step did what it
should; a failed step prints why and the demo exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store

from coordinator.simulation import SIMULATED_SNP_REFERENCE_VALUES

from .errors import StepFailedError
from .processes import Children, start_coordinator
from .report import Narrator

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
POLICY = HERE / "policy.rego"
DEFAULT_POLICY = HERE / "default-policy.rego"

SIMULATED_REFERENCE_VALUES = SIMULATED_SNP_REFERENCE_VALUES  # what `contrast generate --simulate-tee` writes


def initdata_for(workload: str, policy: str) -> bytes:
    """The initdata document a data owner would attach to a pod: its policy, tagged with its name."""
    from attestation.initdata import Initdata, encode

    return encode(Initdata("0.1.0", "sha256", {"policy.rego": f"# workload: {workload}\n{policy}"}))


def load_certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def _chains(leaf: x509.Certificate, roots: list[x509.Certificate], inter: list[x509.Certificate]) -> None:
    PolicyBuilder().store(Store(roots)).build_client_verifier().verify(leaf, inter)


class Demo:
    def __init__(self, work: Path, say: Narrator, skip_mesh: bool) -> None:
        self.work = work
        self.say = say
        self.skip_mesh = skip_mesh
        self.sim_root = work / "simulated-amd"
        os.environ["ATTESTATION_SIMULATED_ROOT"] = str(self.sim_root)
        self.children = Children(REPO, {**os.environ, "PYTHONPATH": str(REPO)})
        self.docs = work / "initdata"
        self.docs.mkdir()
        self.ws = work / "owner-workspace"
        self.ws.mkdir()
        self.mesh_addr = ""
        self.user_addr = ""

    def doc(self, name: str) -> Path:
        return self.docs / f"{name}.toml"

    def run(self) -> None:
        try:
            self.coordinator()
            self.owner()
            self.pod_agent()
            self.identities()
            self.mesh()
        finally:
            self.children.stop_all()

    # -- 1 ------------------------------------------------------------------------------------------

    def coordinator(self) -> None:
        self.say.step("Coordinator with simulated SEV-SNP on loopback")
        coord_policy = "package agent_policy\n\ndefault CreateContainerRequest := true\n"
        self.doc("coordinator").write_bytes(initdata_for("coordinator", coord_policy))
        _, ports = start_coordinator(self.children, self.work / "coordinator-state", self.doc("coordinator"),
                                     self.work / "coordinator.log")
        self.user_addr = f"127.0.0.1:{ports.user}"
        self.mesh_addr = f"127.0.0.1:{ports.mesh}"
        self.say.ok(f"listening: UserAPI {self.user_addr}, MeshAPI {self.mesh_addr}, "
                    f"/attest 127.0.0.1:{ports.http} (logs: coordinator.log)")

    # -- 2 ------------------------------------------------------------------------------------------

    def owner(self) -> None:
        from attestation.initdata import digest

        self.say.step("Data owner: initdata with a policy -> manifest -> set -> verify the Coordinator")
        policy = POLICY.read_text()
        for name in ("web", "db"):
            raw = initdata_for(name, policy)
            self.doc(name).write_bytes(raw)
            self.say.ok(f"initdata {name}.toml: policy {len(policy)} bytes, sha256 {digest(raw).hex()}")
        rv = self.work / "reference-values.json"
        rv.write_text(json.dumps(SIMULATED_REFERENCE_VALUES))
        cli = ["-m", "coordinator.cli", "--workspace-dir", str(self.ws)]
        log = self.work / "cli.log"
        out = self.children.run(
            [*cli, "generate", "--coordinator-initdata", str(self.doc("coordinator")),
             "--reference-values", str(rv), f"{self.doc('web')}:web", f"{self.doc('db')}:db"],
            log, "coordinator.cli generate")
        manifest_bytes = (self.ws / "manifest.json").read_bytes()
        manifest = json.loads(manifest_bytes)
        policies = manifest.get("Policies", {})
        want = {digest(self.doc(n).read_bytes()).hex() for n in ("coordinator", "web", "db")}
        if set(policies) != want:
            raise StepFailedError(f"manifest Policies should be the three initdata digests {sorted(want)}, "
                             f"got {sorted(policies)}; generate said: {out.strip()}")
        manifest_hash = hashlib.sha256(manifest_bytes).hexdigest()
        self.say.ok(f"generate: manifest.json sha256 {manifest_hash}, {len(policies)} policies, "
                    f"reference values: {SIMULATED_REFERENCE_VALUES['snp'][0]['Platform']}")
        self.children.run([*cli, "set", "-c", self.user_addr], log, "coordinator.cli set")
        root = load_certs(self.ws / "coordinator-root-ca.pem")[0]
        self.say.ok(f"set: accepted; root CA {root.subject.rfc4514_string()}, "
                    f"seed share in seed-shares.json")
        self.children.run([*cli, "verify", "-c", self.user_addr], log, "coordinator.cli verify")
        latest = self.ws / "verify" / "manifest.0.json"
        if not latest.exists() or latest.read_bytes() != manifest_bytes:
            raise StepFailedError(f"verify should have written {latest} equal to manifest.json")
        self.say.ok(f"verify: the attested Coordinator serves manifest sha256 {manifest_hash}")

    # -- 3 ------------------------------------------------------------------------------------------

    def pod_agent(self) -> None:
        import attestation
        from attestation.initdata import encode_device
        from coordinator import simulation

        from .agent import PodFiles, run_pod, run_swapped_pod

        self.say.step("Pod web: policy agent in front of kata-agent, policy from the measured initdata")
        pod = self.work / "pod-web-agent"
        pod.mkdir()
        device = pod / "initdata.img"
        raw = self.doc("web").read_bytes()
        device.write_bytes(encode_device(raw))
        # What the (simulated) CPU reports for this pod: HOST_DATA = the initdata digest the host set.
        evidence = simulation.provider(self.sim_root, raw).get_evidence(bytes(64))
        host_data = attestation.local_host_data(evidence)
        asyncio.run(run_pod(PodFiles(pod, device, host_data, DEFAULT_POLICY), self.say, REPO))
        # The host boots the same pod but attaches db's initdata: its digest is not web's HOST_DATA.
        swapped = self.work / "pod-web-swapped"
        swapped.mkdir()
        (swapped / "initdata.img").write_bytes(encode_device(self.doc("db").read_bytes()))
        asyncio.run(run_swapped_pod(PodFiles(swapped, swapped / "initdata.img", host_data, DEFAULT_POLICY),
                                    self.say, REPO))

    # -- 4 ------------------------------------------------------------------------------------------

    def identities(self) -> None:
        self.say.step("Initializers: mesh certificates for web and db; an unlisted pod is refused")
        mesh_ca = load_certs(self.ws / "mesh-ca.pem")
        root_ca = load_certs(self.ws / "coordinator-root-ca.pem")
        for name in ("web", "db"):
            pod = self.work / f"pod-{name}"
            self.children.run(
                ["-m", "initializer", "--simulate-tee", "--simulate-initdata", str(self.doc(name)),
                 "--out-dir", str(pod / "contrast"), "--done-file", str(pod / "done")],
                self.work / f"initializer-{name}.log", f"initializer for {name}", timeout=90,
                extra_env={"COORDINATOR_HOST": self.mesh_addr})
            leaf, *inter = load_certs(pod / "contrast" / "tls-config" / "certChain.pem")
            try:
                _chains(leaf, mesh_ca, [])
                _chains(leaf, root_ca, inter)
            except Exception as exc:
                raise StepFailedError(
                    f"{name}'s certificate should chain to the mesh CA and the root CA: {exc}") from exc
            sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            dns = sans.get_values_for_type(x509.DNSName)
            self.say.ok(f"{name}: {leaf.subject.rfc4514_string()} SANs {dns}"
                        f" issued by {leaf.issuer.rfc4514_string()}; chains to the mesh CA and the root CA")
        self._intruder()

    def _intruder(self) -> None:
        from attestation.atls import CallError, ClientConfig, call, split_host_port
        from attestation.atls.platforms import SnpIssuer
        from attestation.initdata import digest
        from coordinator import rpc, simulation
        from coordinator.proto import meshapi_pb2

        raw = initdata_for("intruder", "package agent_policy\n\ndefault ExecProcessRequest := true\n")
        self.doc("intruder").write_bytes(raw)
        host, port = split_host_port(self.mesh_addr, 7777)
        config = ClientConfig(issuer=SnpIssuer(simulation.provider(self.sim_root, raw)))
        try:
            call(host, port, config, rpc.NEW_MESH_CERT, meshapi_pb2.NewMeshCertRequest())
        except CallError as exc:
            if exc.code != "PERMISSION_DENIED" or "not found in manifest" not in exc.message:
                raise StepFailedError(f"the intruder should get PERMISSION_DENIED 'not found in manifest', "
                                 f"got {exc.code}: {exc.message}") from exc
            self.say.ok(f"intruder (initdata sha256 {digest(raw).hex()[:16]}…): {exc.code} {exc.message}")
            return
        raise StepFailedError("the intruder pod got a mesh certificate although its policy is not "
                              "in the manifest")

    # -- 5 ------------------------------------------------------------------------------------------

    def mesh(self) -> None:
        from .mesh import run_mesh

        self.say.step("Service mesh: web -> db over mTLS with their mesh certificates")
        if self.skip_mesh:
            self.say.skip("--skip-mesh given")
            return
        run_mesh(self.children, self.work, self.work / "pod-web" / "contrast" / "tls-config",
                 self.work / "pod-db" / "contrast" / "tls-config", self.say)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.demo --loopback",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, state)")
    parser.add_argument("--skip-mesh", action="store_true", help="leave out step 5 (the meshproxy)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM cleans up like Ctrl-C
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if our parent ignored SIGINT
    say = Narrator()
    work = Path(tempfile.mkdtemp(prefix="confidential-demo-"))
    say._write(f"confidential containers, local demo (simulated SEV-SNP); work dir {work}")
    status = 1
    try:
        Demo(work, say, args.skip_mesh).run()
        say._write(f"all steps passed in {say.elapsed():.1f} s")
        status = 0
    except StepFailedError as exc:
        say.fail(str(exc))
    except KeyboardInterrupt:
        say.fail("interrupted; stopped every process and removed the work dir")
        status = 130
    except Exception as exc:  # an unexpected error is a failed demo too, with its cause
        say.fail(f"unexpected {type(exc).__name__}: {exc}")
    finally:
        if args.keep:
            say._write(f"kept {work}")
        else:
            _remove(work)
    return status


def _remove(work: Path, attempts: int = 25) -> None:
    """Remove the work dir. A child that got the same Ctrl-C can still be writing into it while it
    exits (its files reappear under a directory rmtree just emptied), so try again, bounded."""
    for _ in range(attempts):
        shutil.rmtree(work, ignore_errors=True)
        if not work.exists():
            return
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())

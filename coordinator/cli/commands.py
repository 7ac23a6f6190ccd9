"""generate / set / verify / recover, with the semantics of Contrast's CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tenacity import Retrying, retry_if_exception, stop_after_delay, wait_fixed

from attestation import (
    AttestationError,
    CollateralDirectory,
    CollateralFetcher,
    NoRevocationSource,
    RevocationSource,
)
from attestation.atls import CallError, ClientConfig, Validator, call, split_host_port
from attestation.initdata import Initdata, InitdataError
from attestation.initdata import encode as encode_initdata
from attestation.initdata import parse as parse_initdata
from attestation.testing import SimulatedCrlSource
from coordinator import manifest as manifest_mod
from coordinator import rpc, verifiers
from coordinator.cli.workspace import (
    COLLATERAL_CACHE,
    INITDATA_DIR,
    LATEST_TRANSITION,
    MANIFEST,
    MESH_CA,
    ROOT_CA,
    SEED_SHARES,
    VERIFY_DIR,
    Workspace,
)
from coordinator.errors import ManifestError, SignatureError
from coordinator.history import ZERO, LatestTransition, sha256
from coordinator.owners import OWNERS_ENTRY, OwnerAnchor
from coordinator.proto import userapi_pb2
from coordinator.seedengine import SeedEngine
from coordinator.simulation import (
    SIMULATED_ROOT_ENV,
    SIMULATED_SNP_REFERENCE_VALUES,
    load_root,
    load_trusted_roots,
)
from coordinator.state import decrypt_seed, key_digest

if TYPE_CHECKING:
    from coordinator.cli.kube import YamlOptions

log = logging.getLogger("contrast")
USER_PORT = 1313
RETRY_INTERVAL = 1.0


class CliError(Exception):
    """A failure the user can act on; printed without a traceback."""


class RollbackDetectedError(CliError):
    """The Coordinator's history does not contain the transition this workspace last saw."""

    def __init__(self, last_seen: bytes, latest: bytes, hint: str) -> None:
        super().__init__(
            f"ROLLBACK: the Coordinator's history (latest transition {latest.hex()}) does not contain the "
            f"transition {last_seen.hex()} this workspace last set or verified ({LATEST_TRANSITION}); "
            f"the host may have put back an older state. {hint}"
        )
        self.last_seen = last_seen
        self.latest = latest


# -- generate ----------------------------------------------------------------------------------------------
def _reference_values(ws: Workspace, reference_values: Path | None, simulated: bool) -> Any:
    if simulated and reference_values is not None:
        raise CliError("give either --simulate-tee or --reference-values, not both")
    if simulated:
        return json.loads(json.dumps(SIMULATED_SNP_REFERENCE_VALUES))
    if reference_values is not None:
        rvs = json.loads(reference_values.read_bytes())
        return rvs.get("ReferenceValues", rvs)
    existing = _existing_manifest(ws)
    return existing.get("ReferenceValues", {})


def _existing_manifest(ws: Workspace) -> dict[str, Any]:
    if ws.path(MANIFEST).exists():
        doc: dict[str, Any] = json.loads(ws.path(MANIFEST).read_bytes())
        return doc
    return {}


def _policy_entry(
    ws: Workspace, raw: bytes, where: str, sans: list[str], secret_id: str, role: str
) -> tuple[str, Any]:
    try:
        doc = parse_initdata(raw)
    except InitdataError as exc:
        raise CliError(f"{where}: {exc}") from exc
    if doc.algorithm != "sha256":
        raise CliError(f"{where}: algorithm {doc.algorithm}, expected sha256 (the policy hash is SHA-256)")
    digest = ws.store_initdata(raw)
    entry: dict[str, Any] = {"SANs": sans, "WorkloadSecretID": secret_id}
    if role:
        entry["Role"] = role
    return digest, entry


def _write_manifest(ws: Workspace, policies: dict[str, Any], rvs: Any, disable_updates: bool,
                    seedshare_key_bits: int) -> list[str]:
    existing = _existing_manifest(ws)
    doc_out: dict[str, Any] = {"Policies": policies, "ReferenceValues": rvs}
    if disable_updates:
        doc_out["WorkloadOwnerKeyDigests"] = []
    else:
        owner = ws.workload_owner_key(create=True)
        assert owner is not None
        doc_out["WorkloadOwnerKeyDigests"] = sorted(
            set(existing.get("WorkloadOwnerKeyDigests") or []) | {key_digest(owner.public_key()).hex()}
        )
    seedshare = ws.seedshare_owner_key(create=True, bits=seedshare_key_bits)
    assert seedshare is not None
    own = manifest_mod.pkcs1_der(seedshare.public_key()).hex()
    doc_out["SeedshareOwnerPubKeys"] = existing.get("SeedshareOwnerPubKeys") or [own]
    ws.write(MANIFEST, json.dumps(doc_out, indent=2).encode() + b"\n")
    return [str(p) for p in manifest_mod.check(doc_out)]


def generate(
    ws: Workspace,
    reference_values: Path | None,
    workloads: Sequence[str],
    coordinator_initdata: Path,
    disable_updates: bool = False,
    seedshare_key_bits: int = 4096,
    simulated: bool = False,
) -> list[str]:
    """Write manifest.json from initdata documents; return the reference values still to fill in.

    `simulated` puts in the one reference value a ``python -m coordinator --simulate-tee`` with the
    default all-zero measurement matches (and nothing else)."""
    rvs = _reference_values(ws, reference_values, simulated)
    policies: dict[str, Any] = {}
    for role, spec in [("coordinator", f"{coordinator_initdata}:coordinator"), *(("", w) for w in workloads)]:
        path_text, _, name = spec.partition(":")
        path = Path(path_text)
        name = name or path.stem
        digest, entry = _policy_entry(ws, path.read_bytes(), str(path), [name, "*"], name, role)
        policies[digest] = entry
    return _write_manifest(ws, policies, rvs, disable_updates, seedshare_key_bits)


def owner_anchor(ws: Workspace, seedshare_key_bits: int = 4096) -> OwnerAnchor:
    """This workspace's owner keys (created if missing), as the Coordinator's initdata names them."""
    seedshare = ws.seedshare_owner_key(create=True, bits=seedshare_key_bits)
    owner = ws.workload_owner_key(create=True)
    assert seedshare is not None and owner is not None
    return OwnerAnchor(
        frozenset({manifest_mod.pkcs1_der(seedshare.public_key()).hex()}),
        frozenset({key_digest(owner.public_key()).hex()}),
    )


def generate_yaml(
    ws: Workspace,
    paths: Sequence[Path],
    options: YamlOptions,
    reference_values: Path | None = None,
    disable_updates: bool = False,
    seedshare_key_bits: int = 4096,
    simulated: bool = False,
) -> tuple[list[str], list[str]]:
    """``contrast generate`` on Kubernetes YAML: annotate the files, write manifest.json.

    Returns (reference values still to fill in, report lines). Nothing is written when any workload
    fails: every file is generated first, then all are replaced."""
    from coordinator.cli import kube
    from genpolicy import GenerateError

    rvs = _reference_values(ws, reference_values, simulated)
    extra = {} if disable_updates else {OWNERS_ENTRY: owner_anchor(ws, seedshare_key_bits).to_json()}
    try:
        results = kube.generate_files(
            paths, options.settings, options.rules, options.images, options.own_images, extra,
            skip_initializer=options.skip_initializer, skip_service_mesh=options.skip_service_mesh,
            extra_initdata=options.extra_initdata,
        )
    except GenerateError as exc:
        raise CliError(str(exc)) from exc
    entries = kube.policy_entries(results)
    if not entries:
        raise CliError("no workload with runtimeClassName contrast-cc in the given YAML")
    if not any(e.role == "coordinator" for e in entries):
        raise CliError("no Coordinator among the workloads (annotation contrast.edgeless.systems/pod-role: "
                       "coordinator)")
    policies: dict[str, Any] = {}
    for e in entries:
        where = e.workload_secret_id
        digest, entry = _policy_entry(ws, e.initdata, where, e.sans, e.workload_secret_id, e.role)
        policies[digest] = entry
    kube.write_files(results)
    lines: list[str] = []
    kube.report(results, lines.append)
    return _write_manifest(ws, policies, rvs, disable_updates, seedshare_key_bits), lines


# -- bind-owners -------------------------------------------------------------------------------------------
def bind_owners(ws: Workspace, coordinator_initdata: bytes, seedshare_key_bits: int = 4096) -> bytes:
    """The Coordinator's initdata with an ``owners.json`` entry naming this workspace's seedshare-owner
    and workload-owner keys (created if missing). Launch the Coordinator with the result and pass it
    to `generate`: the Coordinator then accepts a first manifest, and a recovery, only from these keys,
    and a history whose manifests name other owner keys is refused."""
    try:
        doc = parse_initdata(coordinator_initdata)
    except InitdataError as exc:
        raise CliError(f"coordinator initdata: {exc}") from exc
    data = {**doc.data, OWNERS_ENTRY: owner_anchor(ws, seedshare_key_bits).to_json()}
    return encode_initdata(Initdata(version=doc.version, algorithm=doc.algorithm, data=data))


# -- validators ------------------------------------------------------------------------------------------
def revocation_source(ws: Workspace, collateral_dir: Path | None) -> RevocationSource:
    """Where the CLI gets CRLs and TDX collateral: `--collateral-dir` (offline), else AMD KDS / Intel
    PCS through a cache in the workspace (never the Coordinator's evidence)."""
    if collateral_dir is not None:
        return CollateralDirectory(collateral_dir)
    return CollateralFetcher(ws.path(COLLATERAL_CACHE))


def coordinator_validators(
    manifest: manifest_mod.Manifest,
    simulated_root: Path | None = None,
    revocation: RevocationSource | None = None,
) -> list[Validator]:
    """Validators for the Coordinator (HOST_DATA pinned to its policy hash).

    Entries with Platform Simulated-SNP are trusted only against the simulated AMD root in
    `simulated_root` (``--simulated-root``), or else in $ATTESTATION_SIMULATED_ROOT; never otherwise.
    The simulated chain's CRL is made with that root's ARK key (its directory holds it); everything
    else is checked against `revocation` (none: refused)."""
    if simulated_root is None and os.environ.get(SIMULATED_ROOT_ENV):
        simulated_root = Path(os.environ[SIMULATED_ROOT_ENV])
    roots = None
    if simulated_root is not None:
        try:
            roots = load_trusted_roots(simulated_root)
            if (simulated_root / "ark.key").exists():
                fallback = revocation or NoRevocationSource()
                revocation = SimulatedCrlSource(load_root(simulated_root), fallback=fallback)
        except (OSError, ValueError, AttestationError) as exc:
            raise CliError(f"simulated root {simulated_root}: {exc}") from exc
    try:
        out = verifiers.coordinator_validators(manifest, roots, revocation)
    except AttestationError as exc:
        raise CliError(f"reference values: {exc}") from exc
    if not out:
        if roots is None and any(
            e.platform == verifiers.SIMULATED_PLATFORM for e in manifest.reference_values.snp
        ):
            raise CliError(
                "the manifest's only reference values are Simulated-SNP ones, and no simulated AMD root is "
                "trusted: pass --simulated-root DIR, the root of the `python -m coordinator --simulate-tee` "
                "you talk to (its <state-dir>/simulated-amd, or its $ATTESTATION_SIMULATED_ROOT)"
            )
        raise CliError("no usable reference values in the manifest to verify the Coordinator with")
    return out


class _UnreachableError(Exception):
    """The Coordinator did not answer (connection refused or reset, gRPC UNAVAILABLE): worth retrying."""

    def __init__(self, error: CallError) -> None:
        super().__init__(str(error))
        self.error = error


def _load_manifest(ws: Workspace) -> manifest_mod.Manifest:
    try:
        return manifest_mod.parse(ws.path(MANIFEST).read_bytes())
    except FileNotFoundError as exc:
        raise CliError(f"{ws.path(MANIFEST)} not found: run generate first") from exc
    except ManifestError as exc:
        raise CliError(f"manifest.json is invalid:\n{exc}") from exc


# -- history ---------------------------------------------------------------------------------------------
def transition_chain(manifests: Sequence[bytes]) -> list[bytes]:
    """Transition hashes of a manifest history (oldest first), as the Coordinator stores them."""
    out: list[bytes] = []
    previous = ZERO
    for raw in manifests:
        previous = sha256(sha256(raw) + previous)
        out.append(previous)
    return out


def _seed_engine(ws: Workspace) -> SeedEngine | None:
    """The seed engine from our own seed share, when this workspace holds one (else None)."""
    key = ws.seedshare_owner_key(create=False)
    if key is None or not ws.path(SEED_SHARES).exists():
        return None
    own = manifest_mod.pkcs1_der(key.public_key()).hex()
    doc = ws.read_json(SEED_SHARES)
    share = next((s for s in doc.get("SeedShares", []) if s.get("PublicKey") == own), None)
    if share is None:
        return None
    try:
        seed = decrypt_seed(base64.b64decode(share["EncryptedSeed"]), key)
    except ValueError as exc:
        raise CliError("decrypting the seed share failed: wrong key or corrupted share") from exc
    return SeedEngine(seed, base64.b64decode(doc["salt"]))


def check_history(
    ws: Workspace, response: userapi_pb2.GetManifestsResponse, engine: SeedEngine | None,
    continues: bool = True,
) -> bytes:
    """Check a GetManifests answer and return its latest transition hash: the hash chain over the
    manifests must end in the signed latest transition, the signature must verify with our seed's key
    (when we hold a share), and, if `continues`, the chain must contain the transition this workspace
    last saw (else RollbackDetectedError)."""
    chain = transition_chain(response.Manifests)
    latest = LatestTransition(response.LatestTransition.TransitionHash, response.LatestTransition.Signature)
    if not chain or latest.transition_hash != chain[-1]:
        raise CliError("the Coordinator's latest transition does not match the manifest history it sent")
    if engine is not None:
        try:
            latest.verify(engine.transaction_signing_key.public_key())
        except SignatureError as exc:
            raise CliError("the Coordinator's latest transition is not signed by the key our seed derives: "
                           "this is not the history we own") from exc
    last_seen = ws.last_transition()
    if continues and last_seen is not None and last_seen not in chain:
        raise RollbackDetectedError(last_seen, latest.transition_hash,
                                    "Review verify/ before trusting this Coordinator.")
    return latest.transition_hash


def _get_manifests(host: str, port: int, config: ClientConfig) -> userapi_pb2.GetManifestsResponse:
    try:
        response: userapi_pb2.GetManifestsResponse = call(
            host, port, config, rpc.GET_MANIFESTS, userapi_pb2.GetManifestsRequest()
        )
    except CallError as exc:
        raise CliError(f"reading the Coordinator's history: {exc}") from exc
    return response


# -- set ---------------------------------------------------------------------------------------------------
def set_manifest(
    ws: Workspace, coordinator: str, retry_for: float = 180.0, simulated_root: Path | None = None,
    collateral_dir: Path | None = None,
) -> Any:
    """SetManifest, retried every second for up to `retry_for` seconds while the Coordinator is
    unreachable (not yet started, restarting). A Coordinator that fails attestation is never retried."""
    m = _load_manifest(ws)
    policies = [ws.load_initdata(h) for h in m.policies]
    owner = ws.workload_owner_key(create=False)
    if owner is None or key_digest(owner.public_key()).hex() not in m.workload_owner_key_digests:
        log.warning("event=owner_key_not_in_manifest hint='later updates will be refused'")
    revocation = revocation_source(ws, collateral_dir)
    config = ClientConfig(validators=coordinator_validators(m, simulated_root, revocation), key=owner)
    host, port = split_host_port(coordinator, USER_PORT)
    request = userapi_pb2.SetManifestRequest(Manifest=m.raw, Policies=policies)

    def attempt() -> userapi_pb2.SetManifestResponse:
        try:
            response: userapi_pb2.SetManifestResponse = call(host, port, config, rpc.SET_MANIFEST, request)
        except CallError as exc:
            if exc.unreachable:
                raise _UnreachableError(exc) from exc
            raise CliError(f"setting manifest: {exc}") from exc
        return response

    def log_retry(state: Any) -> None:
        log.info("event=coordinator_unreachable attempt=%d retry_in=%gs", state.attempt_number,
                 RETRY_INTERVAL)

    retrying = Retrying(
        retry=retry_if_exception(lambda exc: isinstance(exc, _UnreachableError)),
        stop=stop_after_delay(retry_for),
        wait=wait_fixed(RETRY_INTERVAL),
        before_sleep=log_retry,
        reraise=True,
    )
    try:
        response = retrying(attempt)
    except _UnreachableError as exc:
        raise CliError(f"setting manifest: gave up after {retry_for:g} s: {exc.error}") from exc
    ws.write(ROOT_CA, response.RootCA)
    ws.write(MESH_CA, response.MeshCA)
    if response.HasField("SeedSharesDoc"):
        doc = {
            "SeedShares": [
                {"PublicKey": s.PublicKey, "EncryptedSeed": base64.b64encode(s.EncryptedSeed).decode()}
                for s in response.SeedSharesDoc.SeedShares
            ],
            "salt": base64.b64encode(response.SeedSharesDoc.salt).decode(),
        }
        ws.write(SEED_SHARES, json.dumps(doc, indent=2).encode(), 0o600)
    # Remember where the history now ends, so that a later rollback behind it is noticed. A first
    # manifest starts a new history; an update must continue the one we saw.
    history = _get_manifests(host, port, ClientConfig(validators=config.validators))
    first = response.HasField("SeedSharesDoc")
    last_seen = ws.last_transition()
    if first and last_seen is not None:
        log.warning("event=new_history previous_latest=%s warning=%r", last_seen.hex(),
                    "the Coordinator had no state: this set started a NEW history (new seed, new root CA); "
                    "the history this workspace saw before is gone (deleted state?)")
    ws.record_transition(check_history(ws, history, _seed_engine(ws), continues=not first))
    return response


# -- verify ------------------------------------------------------------------------------------------------
def verify(
    ws: Workspace, coordinator: str, simulated_root: Path | None = None, collateral_dir: Path | None = None
) -> Any:
    m = _load_manifest(ws)
    revocation = revocation_source(ws, collateral_dir)
    config = ClientConfig(validators=coordinator_validators(m, simulated_root, revocation))
    host, port = split_host_port(coordinator, USER_PORT)
    try:
        response: userapi_pb2.GetManifestsResponse = call(
            host, port, config, rpc.GET_MANIFESTS, userapi_pb2.GetManifestsRequest()
        )
    except CallError as exc:
        raise CliError(f"verifying Coordinator: {exc}") from exc
    ws.write(f"{VERIFY_DIR}/{ROOT_CA}", response.RootCA)
    ws.write(f"{VERIFY_DIR}/{MESH_CA}", response.MeshCA)
    for i, raw in enumerate(response.Manifests):
        ws.write(f"{VERIFY_DIR}/manifest.{i}.json", raw)
    for doc in response.Policies:
        ws.write(f"{VERIFY_DIR}/policy.{hashlib.sha256(doc).hexdigest()}.toml", doc)
    latest = check_history(ws, response, _seed_engine(ws))  # verify/ is written first, for review
    if not response.Manifests or response.Manifests[-1] != m.raw:
        raise CliError(
            "the Coordinator's latest manifest differs from the local manifest.json; review "
            f"{ws.path(VERIFY_DIR)} (history and policies) before trusting this deployment"
        )
    ws.record_transition(latest)
    return response


# -- recover -----------------------------------------------------------------------------------------------
def recover(
    ws: Workspace, coordinator: str, force: bool = False, simulated_root: Path | None = None,
    allow_rollback: bool = False,
    collateral_dir: Path | None = None,
) -> None:
    """Recover with our seed share. The Coordinator is told the transition this workspace last saw and
    refuses a history without it (a rollback) unless `allow_rollback`; afterwards the recovered history
    is read back and checked here too."""
    m = _load_manifest(ws)
    key = ws.seedshare_owner_key(create=False)
    if key is None:
        raise CliError("seedshare-owner.pem not found in the workspace")
    try:
        engine = _seed_engine(ws)
    except FileNotFoundError as exc:
        raise CliError("seed-shares.json not found in the workspace") from exc
    if not ws.path(SEED_SHARES).exists():
        raise CliError("seed-shares.json not found in the workspace")
    if engine is None:
        raise CliError("no seed share for this seedshare-owner key in seed-shares.json")
    last_seen = ws.last_transition()
    if last_seen is None:
        log.warning("event=rollback_unchecked reason=%r", f"{LATEST_TRANSITION} not in the workspace: the "
                    "Coordinator's history cannot be checked against what this workspace last saw")
    elif allow_rollback:
        log.warning("event=rollback_check_disabled last_seen=%s warning=%r", last_seen.hex(),
                    "--allow-rollback: the Coordinator may revive an OLDER manifest than the one last seen")
    expected = None if allow_rollback else last_seen
    revocation = revocation_source(ws, collateral_dir)
    config = ClientConfig(validators=coordinator_validators(m, simulated_root, revocation), key=key)
    host, port = split_host_port(coordinator, USER_PORT)
    request = userapi_pb2.RecoverRequest(Seed=engine.seed, Salt=engine.salt, Force=force,
                                         ExpectedLatestTransition=expected or b"")
    try:
        call(host, port, config, rpc.USER_RECOVER, request)
    except CallError as exc:
        if "rollback" in exc.message:
            raise CliError(f"recovering Coordinator refused: {exc.message}. The host may have put back an "
                           "older state; nothing was recovered. If you really mean to go back to that "
                           "history, run recover again with --allow-rollback") from exc
        raise CliError(f"recovering Coordinator: {exc}") from exc
    # Defence in depth (e.g. a Coordinator that ignores the expected transition): read it back.
    history = _get_manifests(host, port, ClientConfig(validators=config.validators))
    latest = check_history(ws, history, engine, continues=not allow_rollback)
    if last_seen is not None and last_seen not in transition_chain(history.Manifests):
        log.warning("event=rolled_back last_seen=%s now=%s warning=%r", last_seen.hex(), latest.hex(),
                    "the recovered Coordinator runs a history WITHOUT the transition last seen")
    ws.record_transition(latest)


__all__ = [
    "INITDATA_DIR", "CliError", "RollbackDetectedError", "bind_owners", "check_history", "generate",
    "recover", "set_manifest", "verify",
]

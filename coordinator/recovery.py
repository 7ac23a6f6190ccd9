"""What a recovering Coordinator checks before it adopts the history on its disk.

The disk belongs to the host, so nothing read from it counts until it is tied to something the
recovering party proves. `verify_history` accepts the persisted history only if

* ``transitions/latest`` is signed by the transaction signing key that the *supplied* seed derives
  (the owner's seed share or the attested peer's seed): a host that does not know the seed cannot
  sign a history for it;
* every transition back to the first one is present and hashes to its name, and every manifest on
  the way is present, hashes to its name and parses. The hash chain under the one signature is what
  authenticates the older transitions, as in Contrast's format;
* the SeedshareOwnerPubKeys never change along the chain (SetManifest refuses such a change, so a
  history that has one was not written by a Coordinator);
* with an owner anchor in the Coordinator's measured initdata, every manifest names only anchored
  owner keys (else `UnanchoredOwnerError`);
* with the transition the owner last saw, that transition is on the chain (else `RollbackError`).

The check is pure: it reads the store and raises or returns; it changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator import manifest as manifest_mod
from coordinator.errors import (
    HistoryError,
    ManifestError,
    RollbackError,
    SignatureError,
    UntrustedHistoryError,
)
from coordinator.history import History, LatestTransition
from coordinator.manifest import Manifest
from coordinator.owners import OwnerAnchor
from coordinator.seedengine import SeedEngine


@dataclass(frozen=True)
class VerifiedHistory:
    latest: LatestTransition
    manifest: Manifest
    transitions: tuple[bytes, ...]  # newest first

    @property
    def generation(self) -> int:
        return len(self.transitions)


def verify_history(
    history: History,
    engine: SeedEngine,
    anchor: OwnerAnchor | None = None,
    expected_transition: bytes | None = None,
) -> VerifiedHistory:
    latest = history.get_latest_insecure()
    try:
        latest.verify(engine.transaction_signing_key.public_key())
    except SignatureError as exc:
        raise UntrustedHistoryError(
            "transitions/latest is not signed by the key the supplied seed derives (wrong seed, or the "
            "history was written by someone else)",
            found=f"latest {latest.transition_hash.hex()}",
        ) from exc
    hashes: list[bytes] = []
    newest: Manifest | None = None
    owners: tuple[str, ...] | None = None
    current = latest.transition_hash
    try:
        chain = list(history.walk(latest.transition_hash))
    except HistoryError as exc:
        raise UntrustedHistoryError(f"the transition chain is broken: {exc}") from exc
    for transition in chain:
        where = f"transition {current.hex()[:16]}"
        try:
            manifest = manifest_mod.parse(history.get_manifest(transition.manifest_hash))
        except ManifestError as exc:
            raise UntrustedHistoryError(f"{where}: its manifest does not parse: {exc}") from exc
        except HistoryError as exc:
            raise UntrustedHistoryError(f"{where}: its manifest cannot be read: {exc}") from exc
        keys = tuple(k.lower() for k in manifest.seedshare_owner_pub_keys)
        if owners is not None and keys != owners:
            raise UntrustedHistoryError(f"{where}: SeedshareOwnerPubKeys change along the history, which no "
                                        "Coordinator writes")
        owners = keys
        if anchor is not None:
            anchor.check_manifest(manifest, where)
        if newest is None:
            newest = manifest
        hashes.append(current)
        current = transition.previous_transition_hash
    if newest is None:
        raise UntrustedHistoryError("transitions/latest names the empty transition")
    if expected_transition is not None and expected_transition not in hashes:
        raise RollbackError(latest.transition_hash, expected_transition)
    return VerifiedHistory(latest, newest, tuple(hashes))

"""The rules text a generated policy carries: Kata's rules.rego plus the conjuncts this project's
policies need, applied as small textual patches at anchors genpolicy's rules have had for years.

- guest pull pinned by digest: oci.policy (``allow_guest_pull_image``);
- host EROFS layers pinned by dm-verity root hash, complete and in order: guest/storage's
  erofs_layers.rego (``allow_erofs_layers``); the layer storages are then left out of genpolicy's
  storage count and accepted by its storage loop only because the conjunct checks them;
- mount propagation: genpolicy's rules refuse any ``Linux.RootfsPropagation``, which containerd sets
  (rshared / rslave) for a container with a Bidirectional / HostToContainer mount, such as
  Contrast's secure-pv sidecar and its workload; instead the value is pinned per container
  (``allow_rootfs_propagation``), so a host can neither add nor drop it.
"""

from __future__ import annotations

from guest.storage import rego_module as erofs_rego_module
from oci import policy as guest_pull_policy

from .errors import GenerateError

__all__ = ["with_erofs_layers", "with_guest_pull", "with_rootfs_propagation"]

ANCHOR = guest_pull_policy.ANCHOR
EROFS_CALL = "    allow_erofs_layers(p_container, i_storages)\n"
COUNT_LINE = "    p_count == i_count - img_pull_count\n"
COUNT_PATCHED = "    p_count == i_count - img_pull_count - count(erofs_layer_storages(i_storages))\n"
STORAGE_CLAUSE = """
# erofs.multi-layer storages are checked as a whole by allow_erofs_layers (CreateContainerRequest).
allow_storage(p_storages, i_storage, bundle_id, sandbox_id) if {
    i_storage.driver == "erofs.multi-layer"
}
"""
_MODULE_BODY = "package agent_policy\n"
ROOTFS_LINE = "    count(i_linux.RootfsPropagation) == 0\n"
ROOTFS_REPLACED = "    # RootfsPropagation: pinned per container (allow_rootfs_propagation).\n"
LINUX_ANCHOR = "    allow_linux_sysctl(p_oci.Linux, i_oci.Linux)\n"
ROOTFS_CALL = "    allow_rootfs_propagation(p_oci, i_oci)\n"
ROOTFS_CLAUSE = """
# containerd's Linux.RootfsPropagation (rshared / rslave with mount propagation), exactly as generated.
allow_rootfs_propagation(p_oci, i_oci) if {
    i_oci.Linux.RootfsPropagation == object.get(p_oci.Linux, "RootfsPropagation", "")
}
"""


def _fail(detail: str) -> GenerateError:
    return GenerateError("rules.rego", "(rules)", detail, "Kata's genpolicy rules.rego")


def with_guest_pull(rules: str) -> str:
    if "allow_guest_pull_image(" in rules:
        return rules
    try:
        return guest_pull_policy.patch_rules(rules)
    except guest_pull_policy.PatchError as exc:
        raise _fail(str(exc)) from exc


def with_erofs_layers(rules: str) -> str:
    if "allow_erofs_layers(" in rules:
        return rules
    if rules.count(ANCHOR) != 1 or rules.count(COUNT_LINE) != 1:
        raise _fail(f"expected one {ANCHOR.strip()!r} and one {COUNT_LINE.strip()!r}")
    module = erofs_rego_module()
    body = module[module.index(_MODULE_BODY) + len(_MODULE_BODY) :]
    # The module's imports are in the rules already (rules.rego uses the same future keywords).
    body = "\n".join(line for line in body.splitlines() if not line.startswith("import "))
    patched = rules.replace(ANCHOR, ANCHOR + EROFS_CALL).replace(COUNT_LINE, COUNT_PATCHED)
    return (
        patched.rstrip("\n")
        + "\n\n# Host EROFS layers (guest/storage/erofs_layers.rego).\n"
        + body
        + STORAGE_CLAUSE
    )


def with_rootfs_propagation(rules: str) -> str:
    if "allow_rootfs_propagation(" in rules:
        return rules
    if rules.count(ROOTFS_LINE) != 1 or rules.count(LINUX_ANCHOR) != 1:
        raise _fail(f"expected one {ROOTFS_LINE.strip()!r} and one {LINUX_ANCHOR.strip()!r}")
    patched = rules.replace(ROOTFS_LINE, ROOTFS_REPLACED).replace(LINUX_ANCHOR, LINUX_ANCHOR + ROOTFS_CALL)
    return patched.rstrip("\n") + "\n" + ROOTFS_CLAUSE

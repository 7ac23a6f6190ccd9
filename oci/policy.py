"""The guest-pull image rule: kata's rules.rego patched to tie a guest pull to the pinned digest.

``patch_rules(rules_rego)`` returns genpolicy's rules with one more conjunct in
CreateContainerRequest, ``allow_guest_pull_image(p_container, i_oci, i_storages)``, and the rule
module ``guest_pull.rego`` appended (one module, as the guest loads one policy file). The policy
generator writes the pinned reference (``name[:tag]@digest``, the digest from :class:`Reference`)
into ``policy_data.containers[i].OCI.Annotations["io.kubernetes.cri.image-name"]``.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["ANCHOR", "CALL", "REGO_MODULE", "PatchError", "patch_rules", "rule_body", "rule_module"]

REGO_MODULE = "guest_pull.rego"
ANCHOR = "    allow_by_anno(p_oci, i_oci, p_storages, i_storages)\n"
CALL = "    allow_guest_pull_image(p_container, i_oci, i_storages)\n"
_BODY_MARK = "# --- rules (oci.policy appends what follows to rules.rego) ---\n"


class PatchError(ValueError):
    """rules.rego does not have the shape the patch expects (a different genpolicy version)."""


def rule_module() -> str:
    """The standalone Rego module (package agent_policy)."""
    return resources.files(__package__).joinpath(REGO_MODULE).read_text()


def rule_body() -> str:
    """The rules of the module without its package and import lines (to append to a policy)."""
    module = rule_module()
    return module[module.index(_BODY_MARK) + len(_BODY_MARK):]


def patch_rules(rules: str) -> str:
    if rules.count(ANCHOR) != 1:
        raise PatchError(f"rules.rego: expected exactly one line {ANCHOR.strip()!r} "
                         "in CreateContainerRequest")
    if "allow_guest_pull_image(" in rules:
        raise PatchError("rules.rego already carries allow_guest_pull_image")
    body = rule_body()
    patched = rules.replace(ANCHOR, ANCHOR + CALL)
    header = "\n\n# Image pinning for image_guest_pull storages (oci/guest_pull.rego).\n"
    return patched.rstrip("\n") + header + body

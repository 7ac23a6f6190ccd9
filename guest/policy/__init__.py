"""Policy layer: request -> Rego input translation and the regorus-backed engine with kata's contract.

Other packages import only the names in ``__all__``.
"""

from guest.policy.engine import AgentPolicy
from guest.policy.errors import (
    InvalidPolicyError,
    PatchError,
    PolicyDeniedError,
    PolicyError,
    PolicyInputError,
    PolicyInternalError,
)
from guest.policy.input import copy_file_input, copy_file_request_from_input, from_policy_json, to_policy_json
from guest.policy.patch import apply_patch

__all__ = [
    "AgentPolicy",
    "InvalidPolicyError",
    "PatchError",
    "PolicyDeniedError",
    "PolicyError",
    "PolicyInputError",
    "PolicyInternalError",
    "apply_patch",
    "copy_file_input",
    "copy_file_request_from_input",
    "from_policy_json",
    "to_policy_json",
]

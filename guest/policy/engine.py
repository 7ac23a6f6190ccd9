"""The policy engine: kata-agent's ``AgentPolicy`` contract over one regorus engine, built once, reused.

Contract (kata-agent's ``src/agent/policy/src/policy.rs``):

* engine settings: Rego v1 (v0 on request for older genpolicy output), prints gathered, policy
  length limits raised to 64 KiB per line / 16 MiB per file / 200,000 lines, data ``{"pstate": {}}``;
* a request is evaluated as ``data.agent_policy.<Endpoint>`` with the request JSON as ``input``;
* the single value must be a boolean or ``{"allowed": bool, "ops": JSON Patch | null}``; when allowed,
  ``ops`` patch the data document atomically (failure -> internal error); anything else (undefined,
  wrong type, engine error) is an internal error;
* ``AllowRequestsFailingPolicy`` (re-read after every policy load, through the request path itself, so
  it can never be switched off again) turns denials and undefined results into allows, not errors;
* ``set_policy`` builds a fresh engine (state reset). If the new text does not load, the engine is left
  without a policy, exactly as kata-agent leaves it; every later request is then an internal error.

Evaluation uses ``eval_rule`` (one rule, no query compilation) rather than kata's ``eval_query``: the
value is the same, and an undefined or null value is re-checked with ``eval_query`` so the error path
is identical. kata-agent runs regorus with strict builtin errors off; the binding has no switch, so
the builtins that can fail on attacker input are replaced by lenient twins (guest.policy.builtins).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guest.policy._regorus import ThreadBound, regorus, release_orphans
from guest.policy.builtins import install_lenient_builtins
from guest.policy.errors import InvalidPolicyError, PatchError, PolicyDeniedError, PolicyInternalError
from guest.policy.patch import apply_patch

__all__ = ["POLICY_MAX_COL", "POLICY_MAX_FILE_BYTES", "POLICY_MAX_LINES", "AgentPolicy", "Decision"]

log = logging.getLogger("guest.policy")

# kata-agent's limits: generated policies embed all container data in one module with long lines.
POLICY_MAX_COL = 64 * 1024
POLICY_MAX_FILE_BYTES = 16 * 1024 * 1024
POLICY_MAX_LINES = 200_000
POLICY_MODULE = "agent_policy"  # the "file" name of policies from SetPolicy and initdata
ALLOW_FAILURES_RULE = "AllowRequestsFailingPolicy"
_UNDEFINED_RULE = "not a valid rule path"


@dataclass(frozen=True, slots=True)
class Decision:
    """Outcome of one evaluation. ``allowed`` already includes AllowRequestsFailingPolicy."""

    endpoint: str
    allowed: bool
    ops: list[Any] | None
    prints: str
    forced: bool = False  # denied or undefined, allowed only because of AllowRequestsFailingPolicy
    print_lines: tuple[str, ...] = ()


InputLogger = Callable[[str, Any], None]


class AgentPolicy:
    """One regorus engine plus kata's policy state and flags. Not reentrant: calls are serialised."""

    def __init__(self, *, rego_v0: bool = False, input_logger: InputLogger | None = None) -> None:
        self._rego_v0 = rego_v0
        self._input_logger = input_logger
        self._lock = threading.Lock()
        self.allow_failures = False
        self.policy_text: str | None = None
        self.policy_name = POLICY_MODULE
        self._data: dict[str, Any] = {"pstate": {}}
        self._policy_data: tuple[str | None, Any] = (None, None)  # (policy text, its policy_data)
        self._owned = ThreadBound(self._new_engine())

    # -- loading ----------------------------------------------------------------------------------

    @property
    def _engine(self) -> Any:
        return self._owned.value

    def _new_engine(self) -> Any:
        release_orphans()
        engine = regorus.Engine()
        if self._rego_v0:
            engine.set_rego_v0(True)
        engine.set_gather_prints(True)
        engine.set_policy_length_config(
            max_col=POLICY_MAX_COL, max_file_bytes=POLICY_MAX_FILE_BYTES, max_lines=POLICY_MAX_LINES
        )
        install_lenient_builtins(engine)
        self._data = {"pstate": {}}
        engine.add_data(self._data)
        return engine

    def initialize(self, path: str | Path) -> None:
        """Load the boot-time default policy file (print prefixes carry its path, as in kata)."""
        text = Path(path).read_text(encoding="utf-8")
        self.set_policy(text, name=str(path))

    def set_policy(self, text: str, *, name: str = POLICY_MODULE) -> None:
        """Replace the policy with a fresh engine (state reset); raise InvalidPolicyError if it fails."""
        with self._lock:
            self._owned = ThreadBound(self._new_engine())
            self.policy_text = None
            self.policy_name = name
            try:
                self._engine.add_policy(name, text)
            except (RuntimeError, ValueError) as exc:
                raise InvalidPolicyError(str(exc)) from exc
            self.policy_text = text
        self._refresh_allow_failures()

    def _refresh_allow_failures(self) -> None:
        try:
            decision = self.evaluate(ALLOW_FAILURES_RULE, {})
        except PolicyInternalError:
            self.allow_failures = False
            return
        self.allow_failures = decision.allowed
        if self.allow_failures:
            log.warning("event=allow_failures_enabled msg=%s", json.dumps(
                "policy: AllowRequestsFailingPolicy is enabled - will ignore errors"))

    @property
    def state(self) -> dict[str, Any]:
        """A copy of the data document (``{"pstate": {...}}``)."""
        return json.loads(json.dumps(self._data))  # type: ignore[no-any-return]

    # -- evaluation -------------------------------------------------------------------------------

    def _eval(self, endpoint: str, request: Any) -> tuple[Any, bool, list[str]]:
        """(value, defined, prints) of ``data.agent_policy.<endpoint>``; engine errors -> internal."""
        release_orphans()
        engine = self._engine
        # JSON text is the cheaper and more predictable way into regorus than Python-object conversion.
        engine.set_input_json(json.dumps(request, separators=(",", ":")))
        rule = f"data.agent_policy.{endpoint}"
        try:
            value = engine.eval_rule(rule)
        except RuntimeError as exc:
            prints: list[str] = engine.take_prints()
            if _UNDEFINED_RULE in str(exc):
                return None, False, prints
            raise PolicyInternalError(endpoint, str(exc)) from exc
        prints = engine.take_prints()
        if value is None:
            # None is either undefined or a null value; kata distinguishes them (result count).
            try:
                results = engine.eval_query(rule).get("result", [])
            except RuntimeError as exc:  # pragma: no cover - eval_rule succeeded just before
                raise PolicyInternalError(endpoint, str(exc)) from exc
            finally:
                engine.take_prints()
            if not results:
                return None, False, prints
        return value, True, prints

    def evaluate(self, endpoint: str, request: Any) -> Decision:
        """kata's ``allow_request``: a Decision, or PolicyInternalError for machinery failures."""
        with self._lock:
            if self._input_logger is not None:
                self._input_logger(endpoint, request)
            value, defined, lines = self._eval(endpoint, request)
            prints = " ".join(lines)
            ops: list[Any] | None = None
            if not defined:
                if self.allow_failures:
                    return Decision(endpoint, True, None, prints, True, tuple(lines))
                raise PolicyInternalError(endpoint, "policy check: unexpected eval_query result len 0")
            if isinstance(value, bool):
                allowed = value
            elif isinstance(value, dict):
                if self._input_logger is not None:
                    self._input_logger(endpoint, value)
                allowed_value = value.get("allowed")
                if not isinstance(allowed_value, bool):
                    raise PolicyInternalError(
                        endpoint, f"policy check: invalid result, `allowed` must be a boolean: {value!r}"
                    )
                allowed = allowed_value
                raw_ops = value.get("ops")
                if raw_ops is not None and not isinstance(raw_ops, list):
                    raise PolicyInternalError(endpoint, f"policy check: invalid `ops`: {raw_ops!r}")
                ops = raw_ops
                if allowed and ops:
                    self._apply(endpoint, ops)
            else:
                raise PolicyInternalError(
                    endpoint, f"policy check: unexpected eval_query result type {value!r}"
                )
            if not allowed and self.allow_failures:
                log.warning("event=policy_failure_ignored endpoint=%s", endpoint)
                return Decision(endpoint, True, ops, prints, True, tuple(lines))
            return Decision(endpoint, allowed, ops, prints, False, tuple(lines))

    def _apply(self, endpoint: str, ops: list[Any]) -> None:
        try:
            new = apply_patch(self._data, ops)
        except PatchError as exc:
            raise PolicyInternalError(endpoint, str(exc)) from exc
        if not isinstance(new, dict):
            raise PolicyInternalError(endpoint, "policy state patch replaced the data document")
        self._engine.clear_data()
        self._engine.add_data(new)
        self._data = new

    def check(self, endpoint: str, request: Any) -> Decision:
        """Evaluate and raise PolicyDeniedError on a (non-forced) denial."""
        decision = self.evaluate(endpoint, request)
        if not decision.allowed:
            raise PolicyDeniedError(endpoint, decision.prints, decision.print_lines)
        return decision

    def policy_data(self) -> Any:
        """``data.agent_policy.policy_data`` (genpolicy's constant), or None; used for explanations.

        Computed once per loaded policy (it is a constant of the policy text).
        """
        with self._lock:
            text, cached = self._policy_data
            if text is not None and text is self.policy_text:
                return cached
            try:
                value = self._engine.eval_rule("data.agent_policy.policy_data")
            except RuntimeError:
                value = None
            finally:
                self._engine.take_prints()
            self._policy_data = (self.policy_text, value)
            return value

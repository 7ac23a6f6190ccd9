"""Container environment as genpolicy writes it into the policy.

Values come from ``env`` (literal, ConfigMap/Secret key refs, the downward API as genpolicy's
placeholders) and ``envFrom``; then ``$(VAR)`` references are substituted the way kubelet does, except
that values which are themselves runtime placeholders (``$(pod-ip)`` ...) are substituted as such.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import GenerateError

# Placeholders the policy rules resolve at request time (rules.rego), never substituted away.
RUNTIME_PLACEHOLDERS = frozenset(
    {
        "bundle-id",
        "host-ip",
        "node-name",
        "pod-ip",
        "pod-uid",
        "sandbox-id",
        "sandbox-name",
        "sandbox-namespace",
    }
)

_FIELD_REFS = {
    "metadata.name": "$(sandbox-name)",
    "metadata.uid": "$(pod-uid)",
    "status.hostIP": "$(host-ip)",
    "status.podIP": "$(pod-ip)",
    "spec.nodeName": "$(node-name)",
}


class EnvContext:
    """What env resolution needs to know about the pod and the config objects beside it."""

    def __init__(
        self,
        resource: str,
        namespace: str,
        service_account: str,
        annotations: Mapping[str, Any],
        labels: Mapping[str, Any],
        config_maps: Sequence[Mapping[str, Any]],
        secrets: Sequence[Mapping[str, Any]],
    ) -> None:
        self.resource = resource
        self.namespace = namespace
        self.service_account = service_account
        self.annotations = annotations
        self.labels = labels
        self._config_maps = {_name(c): c for c in config_maps}
        self._secrets = {_name(s): s for s in secrets}
        self.used_secret = False  # a Secret's value went into the environment (and so the policy)

    def config_map_data(self, name: str, where: str) -> dict[str, str]:
        obj = self._config_maps.get(name)
        if obj is None:
            raise GenerateError(
                self.resource,
                where,
                f"ConfigMap {name!r} is not in the input",
                "the ConfigMap in the same YAML or a --config-file",
            )
        data = obj.get("data") or {}
        return {str(k): str(v) for k, v in data.items()}

    def secret_data(self, name: str, where: str) -> dict[str, str]:
        self.used_secret = True
        obj = self._secrets.get(name)
        if obj is None:
            raise GenerateError(
                self.resource,
                where,
                f"Secret {name!r} is not in the input",
                "the Secret in the same YAML or a --config-file",
            )
        out = {str(k): str(v) for k, v in (obj.get("stringData") or {}).items()}
        for key, value in (obj.get("data") or {}).items():
            try:
                out[str(key)] = base64.b64decode(str(value), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise GenerateError(
                    f"Secret/{name}", f"data.{key}", "not base64 of UTF-8 text", str(exc)
                ) from exc
        return out


def _name(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else ""


def _field_ref(path: str, ctx: EnvContext, where: str) -> str:
    if path in _FIELD_REFS:
        return _FIELD_REFS[path]
    if path == "metadata.namespace":
        return ctx.namespace or "$(sandbox-namespace)"
    if path == "spec.serviceAccountName":
        return ctx.service_account
    for prefix, table, what in (
        ("metadata.annotations['", ctx.annotations, "annotation"),
        ("metadata.labels['", ctx.labels, "label"),
    ):
        if path.startswith(prefix) and path.endswith("']"):
            key = path[len(prefix) : -2]
            if key in table:
                return str(table[key])
            if what == "annotation":
                return "$(todo-annotation)"
            raise GenerateError(
                ctx.resource,
                where,
                f"label {key!r} is not set on the pod template",
                "a label present in the pod template's metadata",
            )
    raise GenerateError(
        ctx.resource,
        where,
        f"unsupported field reference {path!r}",
        "metadata.name/namespace/uid/annotations/labels, spec.nodeName, "
        "spec.serviceAccountName, status.hostIP or status.podIP",
    )


def _key_ref(source: Mapping[str, Any], ctx: EnvContext, where: str) -> str | None:
    """The value a configMapKeyRef or secretKeyRef names, or None if ``source`` has neither."""
    for field_name, kind, lookup in (
        ("configMapKeyRef", "ConfigMap", ctx.config_map_data),
        ("secretKeyRef", "Secret", ctx.secret_data),
    ):
        if field_name not in source:
            continue
        ref = source[field_name]
        data = lookup(str(ref.get("name", "")), f"{where}.{field_name}")
        if ref.get("key") in data:
            return data[ref["key"]]
        raise GenerateError(
            ctx.resource,
            f"{where}.{field_name}.key",
            f"key {ref.get('key')!r} not in {kind} {ref.get('name')!r}",
            "an existing key",
        )
    return None


def _value_from(source: Mapping[str, Any], ctx: EnvContext, where: str) -> str:
    value = _key_ref(source, ctx, where)
    if value is not None:
        return value
    if "fieldRef" in source:
        return _field_ref(str(source["fieldRef"].get("fieldPath", "")), ctx, where + ".fieldRef.fieldPath")
    if "resourceFieldRef" in source:
        return "$(resource-field)"
    raise GenerateError(
        ctx.resource,
        where,
        "no supported source",
        "configMapKeyRef, secretKeyRef, fieldRef or resourceFieldRef",
    )


def _add(env: list[str], entry: str) -> None:
    if entry not in env:
        env.append(entry)


def container_env(container: Mapping[str, Any], ctx: EnvContext, where: str, env: list[str]) -> None:
    """Append the container's env and envFrom entries (``NAME=value``) to ``env``."""
    for i, var in enumerate(container.get("env") or []):
        name = var.get("name")
        if not isinstance(name, str) or not name:
            raise GenerateError(ctx.resource, f"{where}.env[{i}].name", "missing", "a variable name")
        if "value" in var:
            value = "" if var["value"] is None else str(var["value"])
        elif "valueFrom" in var:
            value = _value_from(var["valueFrom"], ctx, f"{where}.env[{i}].valueFrom")
        else:
            value = ""
        _add(env, f"{name}={value}")
    for i, source in enumerate(container.get("envFrom") or []):
        prefix = str(source.get("prefix") or "")
        if "configMapRef" in source:
            data = ctx.config_map_data(
                str(source["configMapRef"].get("name", "")), f"{where}.envFrom[{i}].configMapRef"
            )
        elif "secretRef" in source:
            data = ctx.secret_data(
                str(source["secretRef"].get("name", "")), f"{where}.envFrom[{i}].secretRef"
            )
        else:
            raise GenerateError(
                ctx.resource, f"{where}.envFrom[{i}]", "no source", "configMapRef or secretRef"
            )
        for key in sorted(data):
            _add(env, f"{prefix}{key}={data[key]}")


def _reference(text: str) -> tuple[int, int] | None:
    start = text.find("$(")
    if start < 0:
        return None
    end = text.find(")", start + 2)
    if end < 0 or end == start + 2:
        return None
    return start + 2, end


def _substitute_one(text: str, env: Sequence[str]) -> str | None:
    found = _reference(text)
    if found is None:
        return None
    name = text[found[0] : found[1]]
    for other in env:
        parts = other.split("=")
        if parts[0] != name or len(parts) != 2:
            continue
        value = parts[1]
        inner = _reference(value)
        if inner is not None and value[inner[0] : inner[1]] not in RUNTIME_PLACEHOLDERS:
            return None
        return text.replace(f"$({name})", value)
    return None


def substitute_env(env: list[str]) -> None:
    """Resolve ``$(VAR)`` inside env values, until nothing changes (bounded by the entry count)."""
    for _ in range(len(env) * 8 + 1):
        changed = False
        for i, entry in enumerate(env):
            parts = entry.split("=")
            if len(parts) != 2:
                continue
            new = _substitute_one(parts[1], env)
            if new is not None and new != parts[1]:
                env[i] = f"{parts[0]}={new}"
                changed = True
        if not changed:
            return


def substitute_args(args: list[str], env: Sequence[str]) -> None:
    for i, arg in enumerate(args):
        for _ in range(64):
            new = _substitute_one(arg, env)
            if new is None or new == arg:
                break
            arg = new
        args[i] = arg

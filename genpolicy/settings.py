"""genpolicy-settings.json plus its RFC 6902 drop-ins, as genpolicy reads them.

A settings path is either the JSON file itself or a directory holding ``genpolicy-settings.json`` and
``genpolicy-settings.d/*.json`` patches applied in file-name order.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guest.policy import PatchError, apply_patch

from .errors import SettingsError

SETTINGS_FILE = "genpolicy-settings.json"
DROP_IN_DIR = "genpolicy-settings.d"
_SECTIONS = (
    "pause_container",
    "other_container",
    "volumes",
    "devices",
    "mount_destinations",
    "sandbox",
    "common",
    "kata_config",
    "cluster_config",
    "request_defaults",
)
EMPTYDIR_TYPES = ("shared-fs", "block-encrypted", "block-plain")
HOST_EROFS = "host-erofs-dm-verity"  # common.image_layer_verification, the Microsoft fork's name


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(str(path), "(file)", f"cannot read: {exc.strerror}") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SettingsError(str(path), "(file)", f"not valid JSON: {exc}") from exc


@dataclass(frozen=True)
class Settings:
    """The merged settings document (read-only by convention; accessors return copies where mutated)."""

    doc: Mapping[str, Any]
    source: str

    @classmethod
    def load(cls, path: str | Path) -> Settings:
        path = Path(path)
        base_path, drop_ins = (path / SETTINGS_FILE, path / DROP_IN_DIR) if path.is_dir() else (path, None)
        doc = _read_json(base_path)
        if drop_ins is not None and drop_ins.is_dir():
            for patch_file in sorted(p for p in drop_ins.iterdir() if p.suffix == ".json"):
                ops = _read_json(patch_file)
                try:
                    doc = apply_patch(doc, ops)
                except PatchError as exc:
                    raise SettingsError(str(patch_file), "(patch)", f"cannot be applied: {exc}") from exc
        return cls.from_document(doc, str(base_path))

    @classmethod
    def from_document(cls, doc: Any, source: str = "<settings>") -> Settings:
        if not isinstance(doc, dict):
            raise SettingsError(source, "(document)", f"got {type(doc).__name__}", "a JSON object")
        for section in _SECTIONS:
            if section not in doc:
                raise SettingsError(source, section, "missing", "every genpolicy settings section")
        exec_defaults = doc["request_defaults"].get("ExecProcessRequest", {})
        if exec_defaults.get("commands"):
            raise SettingsError(
                source,
                "request_defaults.ExecProcessRequest.commands",
                "is deprecated",
                "request_defaults.ExecProcessRequest.allowed_commands",
            )
        emptydir_type = doc["cluster_config"].get("emptydir_type")
        if emptydir_type not in EMPTYDIR_TYPES:
            raise SettingsError(
                source,
                "cluster_config.emptydir_type",
                f"got {emptydir_type!r}",
                f"one of {', '.join(EMPTYDIR_TYPES)}",
            )
        return cls(doc=copy.deepcopy(doc), source=source)

    def section(self, name: str) -> Any:
        """A deep copy of one section, safe to modify."""
        return copy.deepcopy(self.doc[name])

    def container_settings(self, is_pause: bool) -> Any:
        return self.doc["pause_container" if is_pause else "other_container"]

    @property
    def common(self) -> Mapping[str, Any]:
        value: Mapping[str, Any] = self.doc["common"]
        return value

    @property
    def cluster_config(self) -> Mapping[str, Any]:
        value: Mapping[str, Any] = self.doc["cluster_config"]
        return value

    @property
    def host_erofs(self) -> bool:
        """Layers come from the host as dm-verity protected erofs images, each pinned by root hash."""
        return self.common.get("image_layer_verification") == HOST_EROFS

    @property
    def guest_pull(self) -> bool:
        return bool(self.cluster_config.get("guest_pull", False))

    def policy_sections(self) -> dict[str, Any]:
        """The settings parts copied into ``policy_data`` (genpolicy's output order)."""
        devices = self.section("devices")
        nvidia = devices.get("vfio", {}).get("nvidia", {})
        nvidia.pop("pgpu_resource_keys", None)  # generation-time only; genpolicy does not emit it
        sandbox = self.section("sandbox")
        sandbox["storages"] = [storage_fields(s) for s in sandbox.get("storages", [])]
        return {
            "common": self.section("common"),
            "sandbox": sandbox,
            "request_defaults": self.section("request_defaults"),
            "devices": devices,
            "cluster_config": self.section("cluster_config"),
        }


def storage_fields(storage: Mapping[str, Any]) -> dict[str, Any]:
    """An agent Storage message as genpolicy serialises it: every field, proto defaults filled in."""
    return {
        "driver": storage.get("driver", ""),
        "driver_options": list(storage.get("driver_options", [])),
        "source": storage.get("source", ""),
        "fstype": storage.get("fstype", ""),
        "options": list(storage.get("options", [])),
        "mount_point": storage.get("mount_point", ""),
        "fs_group": storage.get("fs_group"),
        "shared": bool(storage.get("shared", False)),
    }

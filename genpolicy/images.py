"""What the generator needs from a container image: its config and its /etc/passwd and /etc/group.

``ImageInfo`` is that data; an ``ImageSource`` resolves an image reference to it. The user and group
rules follow genpolicy (and so kubelet and containerd): ``USER name`` is looked up in the image's
passwd, ``USER uid:gid`` keeps the group only for the pause container.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .errors import ImageError


@dataclass(frozen=True)
class PasswdEntry:
    user: str
    uid: int
    gid: int


@dataclass(frozen=True)
class GroupEntry:
    name: str
    gid: int
    members: tuple[str, ...]


def parse_passwd(text: str) -> list[PasswdEntry]:
    """Lines ``name:x:uid:gid:gecos:home:shell``; malformed lines are skipped as libc does."""
    out = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) != 7 or not parts[2].isdigit() or not parts[3].isdigit():
            continue
        out.append(PasswdEntry(parts[0], int(parts[2]), int(parts[3])))
    return out


def parse_group(text: str) -> list[GroupEntry]:
    out = []
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) != 4 or not parts[2].isdigit():
            continue
        members = tuple(m for m in parts[3].split(",") if m)
        out.append(GroupEntry(parts[0], int(parts[2]), members))
    return out


@dataclass(frozen=True)
class ImageInfo:
    """An image's identity (reference as written, resolved manifest digest) and what a policy uses."""

    reference: str
    digest: str  # manifest digest, "sha256:<hex>"; "" when the source could not tell
    config: Mapping[str, Any] = field(default_factory=dict)  # the image config's "config" object
    passwd: str = ""
    group: str = ""
    # Host EROFS mode: per layer (lowest first) the dm-verity pin of its layer image (image.layers).
    erofs_layers: tuple[Mapping[str, str], ...] = ()

    @property
    def user(self) -> str:
        value = self.config.get("User")
        return value if isinstance(value, str) else ""

    @property
    def has_configured_user(self) -> bool:
        return bool(self.user)

    def gid_of_uid(self, uid: int) -> int | None:
        for entry in parse_passwd(self.passwd):
            if entry.uid == uid:
                return entry.gid
        return None

    def uid_gid_of_user(self, name: str) -> tuple[int, int] | None:
        for entry in parse_passwd(self.passwd):
            if entry.user == name:
                return entry.uid, entry.gid
        return None

    def user_of_uid(self, uid: int) -> str | None:
        for entry in parse_passwd(self.passwd):
            if entry.uid == uid:
                return entry.user
        return None

    def additional_gids(self, uid: int) -> list[int]:
        """Groups that list the user of ``uid`` as a member (not its own same-named group)."""
        if not self.group or not self.passwd:
            return []
        user = self.user_of_uid(uid)
        if user is None:
            return []
        return [g.gid for g in parse_group(self.group) for m in g.members if m == user and g.name != m]

    def uid_of(self, user: str) -> int:
        """A USER component as a uid: numeric, or a passwd name; unresolvable names give 0 (genpolicy)."""
        if not user:
            return 0
        if user.isdigit():
            return int(user)
        found = self.uid_gid_of_user(user)
        return found[0] if found else 0

    def gid_of(self, group: str) -> int | None:
        if not group:
            return None
        if group.isdigit():
            return int(group)
        for entry in parse_group(self.group):
            if entry.name == group:
                return entry.gid
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "reference": self.reference,
            "digest": self.digest,
            "config": dict(self.config),
            "passwd": self.passwd,
            "group": self.group,
        }
        if self.erofs_layers:
            out["erofs_layers"] = [dict(pin) for pin in self.erofs_layers]
        return out

    @classmethod
    def from_json(cls, doc: Any, where: str) -> ImageInfo:
        if not isinstance(doc, dict):
            raise ImageError(where, "(entry)", f"got {type(doc).__name__}", "an object")
        for key, kind in (
            ("reference", str),
            ("digest", str),
            ("config", dict),
            ("passwd", str),
            ("group", str),
        ):
            if not isinstance(doc.get(key), kind):
                raise ImageError(where, key, f"got {type(doc.get(key)).__name__}", kind.__name__)
        pins = doc.get("erofs_layers", [])
        if not isinstance(pins, list) or not all(
            isinstance(p, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in p.items())
            for p in pins
        ):
            raise ImageError(
                where, "erofs_layers", "not a list of string maps", "layer pins from image.layers"
            )
        return cls(doc["reference"], doc["digest"], doc["config"], doc["passwd"], doc["group"], tuple(pins))


class ImageSource(Protocol):
    def resolve(self, reference: str) -> ImageInfo: ...


class StaticImageSource:
    """Images known in advance: a JSON file of ImageInfo objects (``--images FILE``), for offline runs."""

    def __init__(self, images: Mapping[str, ImageInfo]) -> None:
        self._images = dict(images)

    @classmethod
    def load(cls, path: str | Path) -> StaticImageSource:
        path = Path(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ImageError(str(path), "(file)", f"cannot read image descriptions: {exc}") from exc
        if not isinstance(doc, list):
            raise ImageError(str(path), "(file)", f"got {type(doc).__name__}", "a list of image objects")
        images = [ImageInfo.from_json(d, f"{path}[{i}]") for i, d in enumerate(doc)]
        return cls({i.reference: i for i in images})

    def resolve(self, reference: str) -> ImageInfo:
        try:
            return self._images[reference]
        except KeyError:
            raise ImageError(
                reference, "image", "not among the known images", "an entry for this exact reference"
            ) from None

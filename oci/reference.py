"""Image references as Docker and containerd spell them: ``[domain/]path[:tag][@digest]``.

A name without a domain is on Docker Hub (``docker.io``, one-component paths under ``library/``),
as containerd normalizes it. ``Reference.require_digest`` is how every caller that needs the
content pinned (the guest puller, the policy generator) gets the digest, so a tag alone can never
select bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .digest import Digest
from .errors import DigestError, ReferenceError

__all__ = ["DOCKER_HUB", "Reference"]

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)
MAX_NAME = 255


@dataclass(frozen=True)
class Reference:
    domain: str
    path: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: object) -> Reference:
        if not isinstance(text, str) or not text:
            raise ReferenceError(repr(text), "expected a non-empty string")
        rest, at, digest_text = text.partition("@")
        digest = None
        if at:
            try:
                digest = Digest.parse(digest_text)
            except DigestError as exc:
                raise ReferenceError(text, f"digest part: {exc}") from None
        name, tag = rest, None
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            name, tag = rest[:colon], rest[colon + 1:]
            if not _TAG.fullmatch(tag):
                raise ReferenceError(text, f"tag {tag!r} is not [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}")
        if len(name) > MAX_NAME:
            raise ReferenceError(text, f"name longer than {MAX_NAME} characters")
        first, sep, remainder = name.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
            domain, path = first, remainder
            if not _HOST.fullmatch(domain):
                raise ReferenceError(text, f"registry host {domain!r} is not host[:port]")
        else:
            domain, path = DOCKER_HUB, name
        if domain == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        for component in path.split("/"):
            if not _COMPONENT.fullmatch(component):
                raise ReferenceError(text, f"path component {component!r} is not lowercase "
                                     "[a-z0-9] words joined by '.', '_', '__' or '-'")
        return cls(domain, path, tag, digest)

    def require_digest(self) -> Digest:
        """The pinned digest; a reference without one is an error naming the image."""
        if self.digest is None:
            raise ReferenceError(str(self), "a digest (name@sha256:...) is required; a tag does not pin "
                                 "the image's content")
        return self.digest

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def api_host(self) -> str:
        """The host serving the distribution API (Docker Hub's differs from its name)."""
        return DOCKER_HUB_API if self.domain == DOCKER_HUB else self.domain

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

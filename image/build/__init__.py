"""Pod-VM image builder: Debian kernel, measured initramfs, erofs root under dm-verity.

``python -m image build --out DIR`` (or ``python -m image.build``) writes ``image.json``
(:class:`ImageDescription`) next to the kernel, initramfs and disk. See docs/image.md.

Names are loaded lazily: ``image.build.inside`` runs at every guest boot and must not pay for
importing the builder (measured: 1.6 s of imports under TCG).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DESCRIPTION_NAME",
    "BuildError",
    "BuildOptions",
    "ImageDescription",
    "ToolError",
    "VerityParams",
    "build_image",
    "default_cache_dir",
    "verity_table",
]

_WHERE = {
    "DESCRIPTION_NAME": "description",
    "ImageDescription": "description",
    "VerityParams": "description",
    "verity_table": "description",
    "BuildError": "errors",
    "ToolError": "errors",
    "BuildOptions": "builder",
    "build_image": "builder",
    "default_cache_dir": "builder",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Container images of our own parts (Initializer, mesh proxy, Coordinator, the demo apps), built
offline and reproducibly from Debian's packages and this project, as an OCI layout."""

from .build import IMAGES, ImageSpec, build_layout, layer_tar

__all__ = ["IMAGES", "ImageSpec", "build_layout", "layer_tar"]

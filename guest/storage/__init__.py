"""Container storages in the guest: dm-verity devices via /dev/mapper/control and read-only mounts.

- :mod:`.dm`: device-mapper ioctls (create/load/resume/remove/list/table) in Python.
- :mod:`.source`: a storage's host-supplied ``source`` resolved to a kernel block device number.
- :mod:`.verity`: verity tables and mounts with exactly the parameters the policy pinned.
- :mod:`.crypt`: LUKS2 volumes with authenticated encryption (aes-xts + hmac-sha256), cryptsetup.
- :mod:`.encrypted`: kata's block-encrypted emptyDir and the secure image store (ephemeral keys).
- :mod:`.layers`: kata's ``erofs.multi-layer`` ``X-kata.dmverity.*`` options; the Rego module
  ``erofs_layers.rego`` that pins them per layer in policy_data.
"""

from __future__ import annotations

from .crypt import CryptVolume, key_from_workload_secret, mapper_name, open_volume
from .dm import DeviceMapper, MappedDevice, Target
from .encrypted import IMAGE_STORE_ANNOTATION, IMAGE_STORE_MOUNT, IMAGE_STORE_PCI_PATH, image_store_storage
from .errors import DeviceMapperError, PolicyDeniedError, StorageError, StorageOptionError, StorageSourceError
from .layers import (
    mount_layer_storage,
    params_from_options,
    params_from_pin,
    pinned_for,
    rego_module,
    resolve_layer_source,
)
from .mount import make_pod_shared
from .source import SOURCE_PATTERN, BlockDevice, block_device_at, check_unused, resolve_source
from .verity import VerityMount, VerityParams, check_pinned, mount_verity, open_verity, verity_table

__all__ = [
    "IMAGE_STORE_ANNOTATION",
    "IMAGE_STORE_MOUNT",
    "IMAGE_STORE_PCI_PATH",
    "SOURCE_PATTERN",
    "BlockDevice",
    "CryptVolume",
    "DeviceMapper",
    "DeviceMapperError",
    "MappedDevice",
    "PolicyDeniedError",
    "StorageError",
    "StorageOptionError",
    "StorageSourceError",
    "Target",
    "VerityMount",
    "VerityParams",
    "block_device_at",
    "check_pinned",
    "check_unused",
    "image_store_storage",
    "key_from_workload_secret",
    "make_pod_shared",
    "mapper_name",
    "mount_layer_storage",
    "mount_verity",
    "open_verity",
    "open_volume",
    "params_from_options",
    "params_from_pin",
    "pinned_for",
    "rego_module",
    "resolve_layer_source",
    "resolve_source",
    "verity_table",
]

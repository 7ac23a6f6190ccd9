"""The runtime configuration: a TOML file like Kata's configuration.toml.

Found through the runtime option ``ConfigPath`` (``ctr run --runtime-config-path FILE``, or
``ConfigPath`` in containerd's runtime options) or the environment variable
``CONTRAST_CC_CONFIG``. Every key is checked; an unknown key or a wrong type is an error naming
the key (a typo must not silently fall back to a default).

    [image]
    dir = "/var/lib/contrast-cc/image"    # a directory written by `python -m image build --out`
    mode = "host-erofs"                   # or "guest-pull"
    layer_cache = "/var/cache/confidential-guest/layers"   # host-erofs layer images, per layer digest

    [hypervisor]
    qemu = "qemu-system-x86_64"
    accel = "auto"                        # auto (KVM when usable, else TCG), kvm, tcg
    tee = "simulated"                     # simulated (no SEV-SNP/TDX: HOST_DATA on the cmdline), snp, tdx
    firmware = ""                         # OVMF for snp/tdx
    memory_mib = 1024
    vcpus = 1
    snp_guest_policy = 196608

    [initdata]
    default = ""                          # initdata TOML for pods without the annotation; "" = refuse them

    [agent]
    dial_timeout = 120                    # seconds until the agent must answer
    create_container_timeout = 60

    [runtime]
    emptydir_mode = "block-encrypted"     # Kata's emptydir_mode: a disk emptyDir becomes a disk of its
                                          # own in the pod VM, encrypted with a key born there; or
                                          # "shared-fs": its files copied into the VM (CopyFile)
    emptydir_size_mib = 0                 # that disk's size; 0 = the capacity of the filesystem
                                          # holding the emptyDir, as Kata (a sparse file)
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["EMPTYDIR_MODES", "ENV_VAR", "IMAGE_MODES", "Config", "load_config"]

ENV_VAR = "CONTRAST_CC_CONFIG"
IMAGE_MODES = ("host-erofs", "guest-pull")
EMPTYDIR_MODES = ("block-encrypted", "shared-fs")
ACCELS = ("auto", "kvm", "tcg")
TEES = ("simulated", "snp", "tdx")
MAX_CONFIG_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    image_dir: Path
    image_mode: str = "host-erofs"
    qemu: str = "qemu-system-x86_64"
    accel: str = "auto"
    tee: str = "simulated"
    firmware: Path | None = None
    memory_mib: int = 1024
    vcpus: int = 1
    snp_guest_policy: int = 196608
    default_initdata: Path | None = None
    layer_cache: Path = Path("/var/cache/confidential-guest/layers")
    dial_timeout: float = 120.0
    create_container_timeout: float = 60.0
    emptydir_mode: str = "block-encrypted"
    emptydir_size_mib: int = 0


_SCHEMA: dict[str, dict[str, type]] = {
    "image": {"dir": str, "mode": str, "layer_cache": str},
    "hypervisor": {
        "qemu": str,
        "accel": str,
        "tee": str,
        "firmware": str,
        "memory_mib": int,
        "vcpus": int,
        "snp_guest_policy": int,
    },
    "initdata": {"default": str},
    "agent": {"dial_timeout": int, "create_container_timeout": int},
    "runtime": {"emptydir_mode": str, "emptydir_size_mib": int},
}


def _checked(doc: dict[str, Any], path: Path) -> dict[str, dict[str, Any]]:
    for table, value in doc.items():
        if table not in _SCHEMA:
            raise ConfigError(f"{path}: unknown table [{table}] (expected one of {', '.join(_SCHEMA)})")
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: {table} must be a table")
        for key, item in value.items():
            want = _SCHEMA[table].get(key)
            if want is None:
                raise ConfigError(
                    f"{path}: unknown key {table}.{key} (expected one of {', '.join(_SCHEMA[table])})"
                )
            if type(item) is not want:
                raise ConfigError(
                    f"{path}: {table}.{key} must be a {want.__name__}, got {type(item).__name__}"
                )
    return doc


def _absolute(value: str, key: str, base: Path) -> Path:
    p = Path(value)
    if not p.is_absolute():
        p = base / p
    if "\0" in value:
        raise ConfigError(f"{key} contains a NUL character")
    return p


def load_config(path: Path) -> Config:
    """Read and check the configuration at ``path``; ConfigError naming the problem otherwise."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"runtime configuration {path}: {e.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"runtime configuration {path}: larger than {MAX_CONFIG_BYTES} bytes")
    try:
        doc = tomllib.loads(data.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"runtime configuration {path}: not TOML: {e}") from None
    t = _checked(doc, path)
    base = path.parent
    tables = ("image", "hypervisor", "initdata", "agent", "runtime")
    image, hyp, ini, agent, rt = (t.get(k, {}) for k in tables)
    if "dir" not in image:
        raise ConfigError(f"{path}: image.dir is required (a directory written by python -m image build)")
    mode = image.get("mode", "host-erofs")
    if mode not in IMAGE_MODES:
        raise ConfigError(f"{path}: image.mode {mode!r}: expected one of {', '.join(IMAGE_MODES)}")
    accel = hyp.get("accel", "auto")
    if accel not in ACCELS:
        raise ConfigError(f"{path}: hypervisor.accel {accel!r}: expected one of {', '.join(ACCELS)}")
    tee = hyp.get("tee", "simulated")
    if tee not in TEES:
        raise ConfigError(f"{path}: hypervisor.tee {tee!r}: expected one of {', '.join(TEES)}")
    firmware = _absolute(hyp["firmware"], "hypervisor.firmware", base) if hyp.get("firmware") else None
    if tee != "simulated" and firmware is None:
        raise ConfigError(f"{path}: hypervisor.firmware is required with tee = {tee!r} (OVMF)")
    memory, vcpus = hyp.get("memory_mib", 1024), hyp.get("vcpus", 1)
    if not 128 <= memory <= 1024 * 1024:
        raise ConfigError(f"{path}: hypervisor.memory_mib {memory}: expected 128..1048576")
    if not 1 <= vcpus <= 256:
        raise ConfigError(f"{path}: hypervisor.vcpus {vcpus}: expected 1..256")
    for key in ("dial_timeout", "create_container_timeout"):
        if key in agent and not 1 <= agent[key] <= 3600:
            raise ConfigError(f"{path}: agent.{key} {agent[key]}: expected 1..3600 seconds")
    emptydir_mode = rt.get("emptydir_mode", "block-encrypted")
    if emptydir_mode not in EMPTYDIR_MODES:
        raise ConfigError(f"{path}: runtime.emptydir_mode {emptydir_mode!r}: expected one of "
                          f"{', '.join(EMPTYDIR_MODES)}")
    size = rt.get("emptydir_size_mib", 0)
    if not 0 <= size <= 64 << 20:
        raise ConfigError(f"{path}: runtime.emptydir_size_mib {size}: expected 0..{64 << 20} (0: the "
                          "filesystem's capacity)")
    default = ini.get("default", "")
    return Config(
        path=path,
        image_dir=_absolute(image["dir"], "image.dir", base),
        image_mode=mode,
        qemu=hyp.get("qemu", "qemu-system-x86_64"),
        accel=accel,
        tee=tee,
        firmware=firmware,
        memory_mib=memory,
        vcpus=vcpus,
        snp_guest_policy=hyp.get("snp_guest_policy", 196608),
        default_initdata=_absolute(default, "initdata.default", base) if default else None,
        layer_cache=_absolute(
            image.get("layer_cache", "/var/cache/confidential-guest/layers"), "image.layer_cache", base
        ),
        dial_timeout=float(agent.get("dial_timeout", 120)),
        create_container_timeout=float(agent.get("create_container_timeout", 60)),
        emptydir_mode=emptydir_mode,
        emptydir_size_mib=size,
    )


def config_path(option_path: str, environ: dict[str, str] | None = None) -> Path:
    """The file to read: the runtime option's ConfigPath, else $CONTRAST_CC_CONFIG."""
    env = os.environ if environ is None else environ
    chosen = option_path or env.get(ENV_VAR, "")
    if not chosen:
        raise ConfigError(
            "no runtime configuration: set the runtime option ConfigPath "
            f"(ctr run --runtime-config-path FILE) or ${ENV_VAR}"
        )
    if not chosen.startswith("/"):
        raise ConfigError(f"runtime configuration path {chosen!r}: expected an absolute path")
    return Path(chosen)


def render(image_dir: Path, image_mode: str, default_initdata: Path | None = None, *,
           emptydir_mode: str = "block-encrypted", emptydir_size_mib: int = 0) -> str:
    """A configuration for an image directory (``python -m image runtime-config``)."""
    if image_mode not in IMAGE_MODES:
        raise ConfigError(f"image mode {image_mode!r}: expected one of {', '.join(IMAGE_MODES)}")
    if emptydir_mode not in EMPTYDIR_MODES:
        raise ConfigError(f"emptyDir mode {emptydir_mode!r}: expected one of {', '.join(EMPTYDIR_MODES)}")
    lines = [
        "# containerd-shim-contrast-cc-v2 configuration (written by python -m image runtime-config).",
        "[image]",
        f"dir = {_toml_str(str(image_dir))}",
        f"mode = {_toml_str(image_mode)}",
        "",
        "[hypervisor]",
        'accel = "auto"',
        'tee = "simulated"',
        "memory_mib = 1024",
        "vcpus = 1",
        "",
        "[initdata]",
        f"default = {_toml_str(str(default_initdata) if default_initdata else '')}",
        "",
        "[agent]",
        "dial_timeout = 120",
        "create_container_timeout = 60",
        "",
        "[runtime]",
        f"emptydir_mode = {_toml_str(emptydir_mode)}",
        f"emptydir_size_mib = {int(emptydir_size_mib)}",
        "",
    ]
    return "\n".join(lines)


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

"""``contrast generate`` on Kubernetes YAML: inject our parts, generate every confidential workload's
policy, write the initdata annotations back into the files and the policies into the manifest.

The Coordinator is one of the workloads (annotation ``contrast.edgeless.systems/pod-role:
coordinator``): its policy gets the manifest role and its initdata carries the owner anchor, so the
Coordinator accepts manifests and recoveries only from this workspace's keys.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common.files import atomic_write
from genpolicy import (
    GenerateError,
    Generator,
    ImageSource,
    OciImageSource,
    Settings,
    StaticImageSource,
    Workload,
    WorkloadPolicy,
    explain,
    parse_documents,
)
from oci import OciError, RegistryConfig

from .commands import CliError
from .inject import Images, inject, is_confidential, role, workload_secret_id
from .workspace import Workspace


@dataclass(frozen=True)
class YamlOptions:
    """Inputs of the YAML mode of generate besides the files."""

    settings: Settings
    rules: str
    images: ImageSource
    own_images: Images | None
    skip_initializer: bool = False
    skip_service_mesh: bool = False
    extra_initdata: Mapping[str, str] = field(default_factory=dict)  # e.g. imagepuller.toml for every pod


def options_from_args(ws: Workspace, args: argparse.Namespace) -> YamlOptions:
    rules_path = args.policy or ws.path("rules.rego")
    settings_path = args.settings or ws.path("settings.json")
    if not rules_path.exists():
        raise CliError(
            f"{rules_path}: no rules.rego; give -p with the rules.rego of the Kata release the nodes run"
        )
    if not settings_path.exists():
        raise CliError(f"{settings_path}: no genpolicy settings; give -s")
    if args.initializer_image and args.service_mesh_image:
        own: Images | None = Images(args.initializer_image, args.service_mesh_image)
    elif args.initializer_image or args.service_mesh_image:
        raise CliError("give both --initializer-image and --service-mesh-image")
    else:
        own = None
    try:
        images: ImageSource
        if args.images:
            images = StaticImageSource.load(args.images)
        else:
            cache = args.genpolicy_cache_path or ws.path("layers-cache")
            registry = RegistryConfig(insecure=frozenset(args.insecure_registry))
            images = OciImageSource(cache, registry=registry, layout=args.oci_layout)
        settings = Settings.load(settings_path)
    except (GenerateError, OciError) as exc:
        raise CliError(str(exc)) from exc
    rules = rules_path.read_text(encoding="utf-8")
    extra: dict[str, str] = {}
    if args.image_puller_config is not None:
        extra[IMAGE_PULLER_ENTRY] = _image_puller_config(args.image_puller_config)
    return YamlOptions(settings, rules, images, own, args.skip_initializer, args.skip_service_mesh, extra)


IMAGE_PULLER_ENTRY = "imagepuller.toml"


def _image_puller_config(path: Path) -> str:
    """The guest puller's registry settings (``[registries."host:port"]`` tables), measured into every
    workload's initdata; a file that is no such TOML fails generate, not the pod."""
    try:
        text = path.read_text(encoding="utf-8")
        doc = tomllib.loads(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"--image-puller-config {path}: {exc}") from exc
    if not isinstance(doc.get("registries"), dict) or set(doc) != {"registries"}:
        raise CliError(f"--image-puller-config {path}: expected only a [registries] table, "
                       f"found keys {sorted(doc)}")
    return text


@dataclass
class YamlResult:
    """One input file: its new text and the policies of its confidential workloads."""

    path: Path
    text: str
    policies: list[WorkloadPolicy]
    injected: dict[str, list[str]] = field(default_factory=dict)  # workload label -> containers added


@dataclass(frozen=True)
class PolicyEntry:
    initdata: bytes
    sans: list[str]
    workload_secret_id: str
    role: str


def yaml_files(paths: Sequence[Path]) -> list[Path]:
    """``.yml``/``.yaml`` files among ``paths`` (directories are searched), sorted, without duplicates."""
    found: set[Path] = set()
    for path in paths:
        if path.is_dir():
            found.update(p for p in path.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())
        else:
            found.add(path)
    return sorted(found)


def generate_files(
    paths: Sequence[Path],
    settings: Settings,
    rules: str,
    images: ImageSource,
    own_images: Images | None,
    coordinator_extra: Mapping[str, str],
    *,
    skip_initializer: bool = False,
    skip_service_mesh: bool = False,
    extra_initdata: Mapping[str, str] | None = None,
) -> list[YamlResult]:
    """Generate for every file; nothing is written here (the caller writes all files or none)."""
    generator = Generator(settings, rules, images, extra_initdata=extra_initdata)
    # ConfigMaps and Secrets of every file may be referenced from any file.
    parsed = [
        (path, parse_documents(path.read_text(encoding="utf-8"), str(path))) for path in yaml_files(paths)
    ]
    config_maps = [c for _, d in parsed for c in d.config_maps]
    secrets = [s for _, d in parsed for s in d.secrets]

    def extra_for(workload: Workload) -> Mapping[str, str]:
        return coordinator_extra if role(workload) == "coordinator" else {}

    results = []
    for path, docs in parsed:
        docs.config_maps, docs.secrets = config_maps, secrets
        confidential = [w for w in docs.workloads if is_confidential(w)]
        if not confidential:
            continue
        injected = {}
        for workload in confidential:
            added = inject(
                workload, own_images, skip_initializer=skip_initializer, skip_service_mesh=skip_service_mesh
            )
            if added:
                injected[workload.label] = added
        docs.workloads = confidential
        policies = generator.generate(docs, extra_for=extra_for)
        results.append(YamlResult(path, docs.dump(), policies, injected))
    return results


def policy_entries(results: Sequence[YamlResult]) -> list[PolicyEntry]:
    out = []
    for result in results:
        for policy in result.policies:
            w = policy.workload
            name = str(w.metadata.get("name", ""))
            out.append(PolicyEntry(policy.initdata, [name, "*"], workload_secret_id(w), role(w)))
    return out


def write_files(results: Sequence[YamlResult]) -> None:
    for result in results:
        atomic_write(result.path, result.text.encode("utf-8"), mode=0o644)


def report(results: Sequence[YamlResult], emit: Callable[[str], None]) -> None:
    for result in results:
        for label, added in result.injected.items():
            emit(f"{result.path}: {label}: injected {', '.join(added)}")
        emit(explain(result.policies).rstrip("\n"))

"""``python -m genpolicy``: genpolicy's command line for the common flags.

Reads Kubernetes YAML, writes it back with the initdata annotation on every workload's pod template
(in place with ``-y FILE``, else to stdout), and prints per container what the policy allows.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.files import atomic_write
from oci import OciError, RegistryConfig

from .errors import GenerateError
from .images import ImageSource, StaticImageSource
from .oci_source import OciImageSource
from .policy import Generator, WorkloadPolicy
from .resources import Documents, parse_documents
from .settings import Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m genpolicy",
        description="Generate kata agent policies for Kubernetes YAML (genpolicy-compatible output).",
    )
    parser.add_argument(
        "-y", "--yaml-file", help="YAML to read and rewrite in place (default: stdin to stdout)"
    )
    parser.add_argument(
        "-c",
        "--config-file",
        action="append",
        default=[],
        help="YAML with ConfigMaps/Secrets the workloads reference (repeatable)",
    )
    parser.add_argument(
        "-p", "--rego-rules-path", required=True, help="rules.rego to put in front of policy_data"
    )
    parser.add_argument(
        "-j",
        "--json-settings-path",
        required=True,
        help="genpolicy-settings.json, or a directory with it and genpolicy-settings.d/*.json",
    )
    images = parser.add_mutually_exclusive_group()
    images.add_argument("--images", help="JSON list of image descriptions (offline image source)")
    images.add_argument("--oci-layout", help="read images from this local OCI layout instead of registries")
    parser.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        help="registry host[:port] that may be reached over plain HTTP (loopback always may)",
    )
    parser.add_argument(
        "--cache-dir",
        default=str(Path.home() / ".cache" / "genpolicy"),
        help="per-digest blob and layer cache (default: ~/.cache/genpolicy)",
    )
    parser.add_argument(
        "--layer-images",
        help="host EROFS mode: build each layer's erofs + dm-verity image here and pin its root hash "
        "(needs root; the settings must say image_layer_verification host-erofs-dm-verity)",
    )
    parser.add_argument(
        "--runtime-class-names",
        action="append",
        default=[],
        help="only workloads whose runtimeClassName starts with this (repeatable)",
    )
    parser.add_argument(
        "--allow-unpinned-images",
        action="store_true",
        help="accept image references without a digest under guest pull (genpolicy's behaviour)",
    )
    parser.add_argument("-r", "--raw-out", action="store_true", help="print each policy's Rego text")
    parser.add_argument(
        "-b", "--base64-out", action="store_true", help="print each initdata annotation value"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="do not print what each policy allows")
    return parser


def explain(policies: Sequence[WorkloadPolicy]) -> str:
    """What each generated policy allows, one block per container, in the words of the YAML."""
    lines = []
    for policy in policies:
        lines.append(
            f"{policy.workload.label}: initdata annotation written ({len(policy.initdata)} bytes TOML)"
        )
        for c in policy.containers:
            pinned = f"@{c.image_digest}" if c.image_digest and "@" not in c.image else ""
            lines.append(f"  container {c.name} ({c.where})")
            lines.append(f"    image    {c.image}{pinned}")
            lines.append(f"    command  {c.args}")
            lines.append(f"    env      {', '.join(c.env_names) or '-'}")
            lines.append(f"    mounts   {', '.join(c.mounts)}")
            execs = "; ".join(" ".join(e) for e in c.exec_commands) or "none (exec denied)"
            lines.append(f"    exec     {execs}")
    return "\n".join(lines) + ("\n" if lines else "")


def _image_source(args: argparse.Namespace) -> ImageSource:
    if args.images:
        return StaticImageSource.load(args.images)
    layout = Path(args.oci_layout) if args.oci_layout else None
    registry = RegistryConfig(insecure=frozenset(args.insecure_registry))
    layer_images = Path(args.layer_images) if args.layer_images else None
    return OciImageSource(Path(args.cache_dir), registry=registry, layout=layout, layer_images=layer_images)


def run(args: argparse.Namespace, images: ImageSource | None = None) -> int:
    settings = Settings.load(args.json_settings_path)
    rules = Path(args.rego_rules_path).read_text(encoding="utf-8")
    source = args.yaml_file or "<stdin>"
    text = Path(args.yaml_file).read_text(encoding="utf-8") if args.yaml_file else sys.stdin.read()
    docs = parse_documents(text, source)
    for config_file in args.config_file:
        extra: Documents = parse_documents(Path(config_file).read_text(encoding="utf-8"), config_file)
        docs.config_maps.extend(extra.config_maps)
        docs.secrets.extend(extra.secrets)
    generator = Generator(
        settings,
        rules,
        images or _image_source(args),
        require_digest=not args.allow_unpinned_images,
    )
    policies = generator.generate(docs, args.runtime_class_names)
    output = docs.dump()
    for policy in policies:
        if args.raw_out:
            sys.stdout.write(policy.rego + "\n")
        if args.base64_out:
            sys.stdout.write(policy.annotation + "\n")
    if args.yaml_file:
        atomic_write(Path(args.yaml_file), output.encode("utf-8"), mode=0o644)
    elif not (args.raw_out or args.base64_out):
        sys.stdout.write(output)
    if not args.quiet:
        sys.stderr.write(explain(policies))
    if docs.secrets and any(p.secret_env for p in policies):
        # genpolicy's behaviour, kept for compatibility: the value is pinned in the policy, and the
        # policy travels in the pod annotation, readable by whoever can read the pod.
        sys.stderr.write(
            "genpolicy: warning: Secret values referenced by env are written into the policy "
            "(readable in the pod annotation); use workload secrets from the Coordinator instead\n"
        )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except GenerateError as exc:
        sys.stderr.write(f"genpolicy: {exc}\n")
        return 1
    except OciError as exc:
        sys.stderr.write(f"genpolicy: {exc}\n")
        return 1
    except OSError as exc:
        sys.stderr.write(f"genpolicy: {exc.filename}: {exc.strerror}\n")
        return 1

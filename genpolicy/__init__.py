"""A genpolicy-compatible policy generator: Kubernetes YAML in, kata agent policies and initdata out.

Reads the same inputs as Kata's genpolicy (rules.rego, genpolicy-settings.json with drop-ins, the
images' configs) and writes the same output shape (``policy_data`` after the rules, in Kata's initdata
annotation), so its policies run unchanged in kata-agent and in this project's policy agent.
"""

from .cli import explain
from .errors import GenerateError, ImageError, SettingsError
from .images import ImageInfo, ImageSource, StaticImageSource
from .oci_source import OciImageSource
from .policy import ContainerSummary, Generator, WorkloadPolicy, render_policy
from .resources import INITDATA_ANNOTATION, Documents, Workload, parse_documents
from .settings import Settings

__all__ = [
    "INITDATA_ANNOTATION",
    "ContainerSummary",
    "Documents",
    "GenerateError",
    "Generator",
    "ImageError",
    "ImageInfo",
    "ImageSource",
    "OciImageSource",
    "Settings",
    "SettingsError",
    "StaticImageSource",
    "Workload",
    "WorkloadPolicy",
    "explain",
    "parse_documents",
    "render_policy",
]

"""Readable denial explanations (beyond kata-agent, whose denials are a wall of print output).

Two sources, both computed only after a denial, never changing it:

* rule bodies: genpolicy's rules print ``<rule> <n>: ...`` when a body starts and ``<rule> <n>: true``
  when it succeeds, so the bodies of the endpoint rule that started and never succeeded are the ones
  that failed (:func:`failed_bodies`);
* the first input field no policy entry matched, found by comparing the request with genpolicy's
  ``policy_data`` (:class:`Explainer`). The comparison mirrors the main rules loosely (placeholders and
  regexes in policy values are treated as "matches anything"), so it names a likely culprit rather
  than proving one; rules.rego stays the only judge.

Secrets: environment values and other free-form data never appear in explanations; an env variable is
named by its key only (``containers[1].OCI.Process.Env[3]: variable 'DB_PASSWORD' ...``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Explainer", "failed_bodies", "yaml_hints"]

_PREFIX = re.compile(r"^.*?:\d+: ")
_LABEL = re.compile(r"^([A-Za-z_]\w*)(?: (\d+))?: ?(.*)$", re.DOTALL)
_PLACEHOLDER = re.compile(r"\$\([^)]*\)")
_MAX_SHOWN = 60


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def failed_bodies(endpoint: str, print_lines: Sequence[str], limit: int = 6) -> list[str]:
    """Rule bodies that started (printed) but never printed ``<label>: true``.

    The endpoint's own bodies come first; then helper rules none of whose bodies ever succeeded in this
    evaluation (e.g. ``allow_env``), in the order they were first tried.
    """
    started: list[str] = []
    succeeded: set[str] = set()
    rule_ok: set[str] = set()
    for line in print_lines:
        m = _LABEL.match(_PREFIX.sub("", line, count=1))
        if not m:
            continue
        name, number, rest = m.group(1), m.group(2), m.group(3).strip()
        label = f"{name} {number}" if number else name
        if rest == "true":
            succeeded.add(label)
            rule_ok.add(name)
        elif label not in started:
            started.append(label)
    own = [lb for lb in started if lb.split(" ")[0] == endpoint and lb not in succeeded]
    if not own and endpoint not in rule_ok and any(lb.split(" ")[0] == endpoint for lb in started):
        own = [endpoint]
    helpers: list[str] = []
    for lb in started:
        name = lb.split(" ")[0]
        if name != endpoint and name not in rule_ok and name not in helpers:
            helpers.append(name)
    return own + helpers[: max(0, limit - len(own))]


def _loose_equal(policy_value: Any, input_value: Any) -> bool:
    """Equal, or the policy value is a genpolicy placeholder/regex we do not expand here."""
    if policy_value == input_value:
        return True
    if isinstance(policy_value, str) and isinstance(input_value, str):
        if _PLACEHOLDER.search(policy_value) or policy_value.startswith("^"):
            return True
        return policy_value.replace("$$", "$") == input_value
    return False


def _env_name(var: str) -> str:
    return var.split("=", 1)[0]


class Explainer:
    """Callable ``(endpoint, input, print_lines) -> reasons`` over one policy's ``policy_data``."""

    def __init__(self, policy_data: Callable[[], Any], state: Callable[[], Any] | None = None) -> None:
        self._policy_data = policy_data
        self._state = state

    def __call__(self, endpoint: str, request: Any, print_lines: Sequence[str] = ()) -> list[str]:
        reasons = [f"rule body failed: {label}" for label in failed_bodies(endpoint, print_lines)]
        data = self._policy_data()
        if not isinstance(data, dict) or not isinstance(request, dict):
            return reasons
        if endpoint == "CreateContainerRequest":
            reasons += yaml_hints(self._create_container(data, request), data)
        elif endpoint == "ExecProcessRequest":
            reasons += self._exec_process(data, request)
            reasons += self._exec_hint(data, request)
        elif endpoint == "CopyFileRequest":
            reasons.append(f"path: got {_short(request.get('path'))!r} ({request.get('file_type')}), "
                           "no CopyFileRequest pattern in the policy allows it")
        return reasons

    # -- CreateContainer ----------------------------------------------------------------------------

    def _create_container(self, data: dict[str, Any], req: dict[str, Any]) -> list[str]:
        oci = req.get("OCI") or {}
        sanity = _input_sanity(req, oci)
        if sanity:
            return sanity[:1]
        containers = data.get("containers") or []
        candidates = _candidate_containers(containers, oci)
        if not candidates:
            return [_no_candidate_reason(containers, oci)]
        defaults = (data.get("request_defaults") or {}).get("CreateContainerRequest") or {}
        common = data.get("common") or {}
        env_regex = [_expand_common(r, common) for r in defaults.get("allow_env_regex") or []]
        # The closest policy container (fewest mismatches) is the one the host most likely meant.
        best: list[str] | None = None
        for index, p in candidates:
            found = _container_mismatches(index, p, req, env_regex, common)
            if best is None or len(found) < len(best):
                best = found
        return (best or [])[:3]

    # -- ExecProcess --------------------------------------------------------------------------------

    def _exec_hint(self, data: dict[str, Any], req: dict[str, Any]) -> list[str]:
        """The exec commands come from the container's probes and hooks: name them in the YAML."""
        if self._state is None:
            return []
        index = ((self._state() or {}).get("pstate") or {}).get(req.get("container_id"))
        source = _source(data, index) if isinstance(index, int) else None
        if source is None:
            return []
        return [f"YAML: {source.get('resource')} {source.get('path')}: add the command as an exec "
                "livenessProbe, readinessProbe, startupProbe or lifecycle hook, then regenerate"]

    def _exec_process(self, data: dict[str, Any], req: dict[str, Any]) -> list[str]:
        process = req.get("process") or {}
        args = process.get("Args") or []
        shown = [_short(a) for a in args[:4]]
        defaults = (data.get("request_defaults") or {}).get("ExecProcessRequest") or {}
        allowed = [c for c in defaults.get("allowed_commands") or []]
        for container in data.get("containers") or []:
            allowed += container.get("exec_commands") or []
        if self._state is not None:
            pstate = (self._state() or {}).get("pstate") or {}
            cid = req.get("container_id")
            if cid not in pstate:
                return [f"container_id: {_short(cid)!r} was not created under this policy "
                        "(not in the policy state), so no policy container applies"]
        if args not in allowed:
            options = [[_short(a) for a in c[:4]] for c in allowed[:5]]
            regexes = f" or commands matching {defaults.get('regex')}" if defaults.get("regex") else ""
            return [f"process.Args: got {shown}, policy allows {options}{regexes}"]
        return ["process.Args allowed, but the container id is not recorded in the policy state or the "
                "process (user, env, cwd, capabilities) differs from the policy container"]


def _container_annotations(oci: dict[str, Any]) -> tuple[Any, Any]:
    """(container name, container type) from the CRI annotations."""
    annotations = oci.get("Annotations") or {}
    return (annotations.get("io.kubernetes.cri.container-name"),
            annotations.get("io.kubernetes.cri.container-type"))


def _candidate_containers(containers: Sequence[dict[str, Any]], oci: dict[str, Any]) -> list[tuple[int, Any]]:
    """(index, policy container) of the same type, and for a container also the same name."""
    name, kind = _container_annotations(oci)
    candidates = []
    for index, p in enumerate(containers):
        p_name, p_kind = _container_annotations(p.get("OCI") or {})
        if p_kind != kind or (kind == "container" and p_name != name):
            continue
        candidates.append((index, p))
    return candidates


def _no_candidate_reason(containers: Sequence[dict[str, Any]], oci: dict[str, Any]) -> str:
    name, kind = _container_annotations(oci)
    allowed = sorted({str(((c.get("OCI") or {}).get("Annotations") or {}).get(
        "io.kubernetes.cri.container-name", "<sandbox>")) for c in containers})
    return (f"OCI.Annotations[io.kubernetes.cri.container-name]: got {_short(name)!r} "
            f"(type {kind!r}), policy allows {allowed}")


def _input_sanity(req: dict[str, Any], oci: dict[str, Any]) -> list[str]:
    out = []
    if req.get("shared_mounts"):
        out.append("shared_mounts: must be empty")
    if req.get("string_user") is not None:
        out.append("string_user: must be null")
    for key in ("Hooks", "Solaris", "Windows"):
        if oci.get(key) is not None:
            out.append(f"OCI.{key}: must be null")
    linux = oci.get("Linux") or {}
    for key in ("GIDMappings", "UIDMappings"):
        if linux.get(key):
            out.append(f"OCI.Linux.{key}: must be empty")
    for key in ("MountLabel", "RootfsPropagation"):
        if linux.get(key):
            out.append(f"OCI.Linux.{key}: must be empty, got {_short(linux[key])!r}")
    for key in ("IntelRdt", "Seccomp"):
        if linux.get(key) is not None:
            out.append(f"OCI.Linux.{key}: must be null")
    process = oci.get("Process") or {}
    if process.get("SelinuxLabel"):
        out.append("OCI.Process.SelinuxLabel: must be empty")
    if (process.get("User") or {}).get("Username"):
        out.append("OCI.Process.User.Username: must be empty")
    return out


def _re_match(pattern: Any, text: str) -> bool:
    if not isinstance(pattern, str) or "$(" in pattern:
        return False
    try:
        return re.search(pattern, text) is not None
    except re.error:
        return False


def _expand_common(pattern: Any, common: dict[str, Any]) -> Any:
    """An allow_env_regex with the placeholders rules.rego substitutes from policy_data.common."""
    if not isinstance(pattern, str):
        return pattern
    for key in ("ipv4_a", "ip_p", "svc_name_downward_env", "dns_label"):
        value = common.get(key)
        if isinstance(value, str):
            pattern = pattern.replace(f"$({key})", value)
    return pattern


def _caps(values: Any, common: dict[str, Any]) -> set[str] | None:
    """A capability set as match_caps compares it (CAP_ prefix stripped, the shorthands expanded)."""
    if not isinstance(values, list):
        return None
    if len(values) == 1 and values[0] in ("$(default_caps)", "$(privileged_caps)"):
        values = common.get("default_caps" if values[0] == "$(default_caps)" else "privileged_caps") or []
    return {str(c).removeprefix("CAP_") for c in values}


def _caps_mismatches(where: str, p_proc: dict[str, Any], i_proc: dict[str, Any],
                     common: dict[str, Any]) -> list[str]:
    p_caps, i_caps = p_proc.get("Capabilities"), i_proc.get("Capabilities") or {}
    if not isinstance(p_caps, dict):
        return []
    for key in ("Ambient", "Bounding", "Effective", "Inheritable", "Permitted"):
        allowed, got = _caps(p_caps.get(key), common), _caps(i_caps.get(key) or [], common)
        if allowed is None or got is None or allowed == got:
            continue
        extra, missing = sorted(got - allowed), sorted(allowed - got)
        what = (f"{len(extra)} capabilities the policy does not allow (e.g. {extra[0]})" if extra
                else f"{len(missing)} fewer than the policy (e.g. no {missing[0]})")
        return [f"{where}.OCI.Process.Capabilities.{key}: got {what}"]
    return []


def _container_mismatches(
    index: int, p: dict[str, Any], req: dict[str, Any], env_regex: Sequence[Any] = (),
    common: dict[str, Any] | None = None,
) -> list[str]:
    """Every field of the request that policy container `index` does not allow, in the order of the
    main rules (process, annotations, env, mounts, storages, OCI version and sysctls)."""
    where = f"containers[{index}]"
    p_oci, i_oci = p.get("OCI") or {}, req.get("OCI") or {}
    p_proc, i_proc = p_oci.get("Process") or {}, i_oci.get("Process") or {}
    out: list[str] = []
    if p.get("sandbox_pidns") != req.get("sandbox_pidns"):
        out.append(f"{where}.sandbox_pidns: got {req.get('sandbox_pidns')}, "
                   f"policy allows {p.get('sandbox_pidns')}")
    out += _process_mismatches(where, p_proc, i_proc)
    out += _caps_mismatches(where, p_proc, i_proc, common or {})
    out += _sandbox_name_mismatches(where, p_oci, i_oci)
    out += _image_mismatches(where, p_oci, i_oci)
    out += _env_mismatches(where, p_proc, i_proc, env_regex)
    out += _mount_mismatches(where, p_oci, i_oci)
    out += _storage_mismatches(where, p, req)
    out += _version_and_sysctl_mismatches(where, p_oci, i_oci)
    return out


def _process_mismatches(where: str, p_proc: dict[str, Any], i_proc: dict[str, Any]) -> list[str]:
    """Args, Cwd/NoNewPrivileges/Terminal and the user (UID, GID, AdditionalGids)."""
    out: list[str] = []
    p_args, i_args = p_proc.get("Args") or [], i_proc.get("Args") or []
    if len(p_args) != len(i_args):
        out.append(f"{where}.OCI.Process.Args: got {len(i_args)} arguments, policy allows {len(p_args)}")
    else:
        for i, (pa, ia) in enumerate(zip(p_args, i_args, strict=True)):
            if not _loose_equal(pa, ia):
                out.append(f"{where}.OCI.Process.Args[{i}]: got {_short(ia)!r}, policy allows {_short(pa)!r}")
                break
    for key in ("Cwd", "NoNewPrivileges", "Terminal"):
        if key in p_proc and not _loose_equal(p_proc[key], i_proc.get(key)):
            out.append(f"{where}.OCI.Process.{key}: got {_short(i_proc.get(key))!r}, "
                       f"policy allows {_short(p_proc[key])!r}")
    p_user, i_user = p_proc.get("User") or {}, i_proc.get("User") or {}
    for key in ("UID", "GID"):
        if key in p_user and p_user[key] != i_user.get(key):
            out.append(f"{where}.OCI.Process.User.{key}: got {i_user.get(key)}, policy allows {p_user[key]}")
    p_gids, i_gids = p_user.get("AdditionalGids"), i_user.get("AdditionalGids")
    if p_gids is not None and set(p_gids) != set(i_gids or []):
        out.append(f"{where}.OCI.Process.User.AdditionalGids: got {sorted(set(i_gids or []))}, "
                   f"policy allows {sorted(set(p_gids))}")
    return out


def _sandbox_name_mismatches(where: str, p_oci: dict[str, Any], i_oci: dict[str, Any]) -> list[str]:
    """The sandbox-name annotation against the policy's regex."""
    p_anno = p_oci.get("Annotations") or {}
    i_anno = i_oci.get("Annotations") or {}
    name_re = p_anno.get("io.kubernetes.cri.sandbox-name")
    i_name = i_anno.get("io.kubernetes.cri.sandbox-name", "")
    if isinstance(name_re, str) and isinstance(i_name, str) and not _re_match(name_re, i_name):
        return [f"{where}.OCI.Annotations[io.kubernetes.cri.sandbox-name]: got {_short(i_name)!r}, "
                f"policy allows {_short(name_re)!r}"]
    return []


def _image_mismatches(where: str, p_oci: dict[str, Any], i_oci: dict[str, Any]) -> list[str]:
    """The image the runtime names against the one the policy was generated for. genpolicy's rules
    accept any io.kubernetes.cri.* value, so this is never the denial itself; but what differs then
    (env, user, args from the image config, the layers) comes from the image: name it."""
    key = "io.kubernetes.cri.image-name"
    p_image = (p_oci.get("Annotations") or {}).get(key)
    i_image = (i_oci.get("Annotations") or {}).get(key)
    if isinstance(p_image, str) and isinstance(i_image, str) and p_image != i_image and "$(" not in p_image:
        return [f"{where}.OCI.Annotations[{key}]: got {_short(i_image)!r}, the policy was generated for "
                f"{_short(p_image)!r}"]
    return []


def _env_mismatches(
    where: str, p_proc: dict[str, Any], i_proc: dict[str, Any], env_regex: Sequence[Any]
) -> list[str]:
    """The first env variable no policy entry, template or allowed regex covers; named by key only."""
    p_env = p_proc.get("Env") or []
    templated = {_env_name(v) for v in p_env if "$(" in v}
    for i, var in enumerate(i_proc.get("Env") or []):
        name = _env_name(var)
        if var in p_env or name in templated or any(_re_match(r, var) for r in env_regex):
            continue
        known = any(_env_name(v) == name for v in p_env)
        what = "has a value the policy does not allow" if known else "is not in the policy"
        return [f"{where}.OCI.Process.Env[{i}]: variable {_short(name)!r} {what} (value not shown)"]
    return []


def _mount_mismatches(where: str, p_oci: dict[str, Any], i_oci: dict[str, Any]) -> list[str]:
    """The first mount whose destination is unknown, repeated, or whose type/options/source differ."""
    p_mounts = {m.get("destination"): m for m in p_oci.get("Mounts") or []}
    seen: set[Any] = set()
    for i, mount in enumerate(i_oci.get("Mounts") or []):
        dest = mount.get("destination")
        p_mount = p_mounts.get(dest)
        if p_mount is None:
            return [f"{where}.OCI.Mounts[{i}].destination: got {_short(dest)!r}, no policy mount has it"]
        if dest in seen:
            return [f"{where}.OCI.Mounts[{i}].destination: {_short(dest)!r} appears twice"]
        seen.add(dest)
        keys = ("type_", "options") if p_mount.get("source") == "" else ("type_", "options", "source")
        bad = [k for k in keys if not _loose_equal(p_mount.get(k), mount.get(k))]
        if bad:
            k = bad[0]
            return [f"{where}.OCI.Mounts[{i}].{k}: got {_short(mount.get(k))!r}, "
                    f"policy allows {_short(p_mount.get(k))!r}"]
    return []


_IMAGE_DRIVERS = ("image_guest_pull", "erofs.multi-layer")


def _storage_mismatches(where: str, p: dict[str, Any], req: dict[str, Any]) -> list[str]:
    """Storage count (guest-pull images aside), then the first storage no policy storage matches."""
    out: list[str] = []
    p_storages, i_storages = p.get("storages") or [], req.get("storages") or []
    # Image storages are not counted by the rules: guest pull is checked by its own rule, host-EROFS
    # layers as a whole against the policy's erofs_layers.
    image = sum(1 for s in i_storages if s.get("driver") in _IMAGE_DRIVERS)
    if len(p_storages) != len(i_storages) - image:
        out.append(f"{where}.storages: got {len(i_storages) - image}, policy allows {len(p_storages)}")
    for i, st in enumerate(i_storages):
        if st.get("driver") in _IMAGE_DRIVERS:
            continue
        block = st.get("driver") in ("blk", "scsi")  # block emptyDir: the policy's driver is ""
        same = [ps for ps in p_storages
                if ps.get("driver") == st.get("driver") or (block and not ps.get("driver"))]
        if not same:
            out.append(f"{where}.storages[{i}].driver: got {_short(st.get('driver'))!r}, "
                       f"policy allows {sorted({str(ps.get('driver')) for ps in p_storages})}")
            break
        fields = ("fstype", "options", "driver_options", "fs_group", "shared")
        if not any(all(_loose_equal(ps.get(k), st.get(k)) for k in fields) for ps in same):
            k = next(k for k in fields if not _loose_equal(same[0].get(k), st.get(k)))
            out.append(f"{where}.storages[{i}].{k}: got {_short(st.get(k))!r}, "
                       f"policy allows {_short(same[0].get(k))!r}")
            break
    return out


def _version_and_sysctl_mismatches(where: str, p_oci: dict[str, Any], i_oci: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if p_oci.get("Version") != i_oci.get("Version"):
        out.append(f"{where}.OCI.Version: got {_short(i_oci.get('Version'))!r}, "
                   f"policy allows {_short(p_oci.get('Version'))!r}")
    p_sysctl = (p_oci.get("Linux") or {}).get("Sysctl") or {}
    for key, value in ((i_oci.get("Linux") or {}).get("Sysctl") or {}).items():
        if p_sysctl.get(key) != value:
            out.append(f"{where}.OCI.Linux.Sysctl[{_short(key)!r}]: not allowed by the policy")
            break
    return out


# Policy field (as the explanations name it) -> the YAML field that produced it; {c} is the container's
# YAML path, {pod} the pod spec's. Most specific prefix first.
_YAML_FIELDS: tuple[tuple[str, str], ...] = (
    ("OCI.Process.Args", "{c}.command / args (or the image's Entrypoint / Cmd)"),
    ("OCI.Process.Env", "{c}.env / envFrom (or the ConfigMap / Secret they reference)"),
    ("OCI.Process.User.AdditionalGids", "{pod}.securityContext.fsGroup / supplementalGroups"),
    ("OCI.Process.User", "{c}.securityContext.runAsUser / runAsGroup"),
    ("OCI.Process.Terminal", "{c}.tty"),
    ("OCI.Process.Cwd", "{c}.workingDir (or the image's WorkingDir)"),
    ("OCI.Process.NoNewPrivileges", "{c}.securityContext.allowPrivilegeEscalation"),
    ("OCI.Process.Capabilities", "{c}.securityContext.capabilities / privileged"),
    ("OCI.Mounts", "{c}.volumeMounts (and {pod}.volumes)"),
    ("OCI.Annotations[io.kubernetes.cri.sandbox-name]", "metadata.name"),
    ("OCI.Annotations[io.kubernetes.cri.image-name]", "{c}.image"),
    ("OCI.Linux.Sysctl", "{pod}.securityContext.sysctls"),
    ("OCI.Root.Readonly", "{c}.securityContext.readOnlyRootFilesystem"),
    ("OCI.Version", "(the runtime's OCI version: regenerate with this cluster's settings)"),
    ("storages", "{c}.image / {pod}.volumes"),
    ("sandbox_pidns", "{pod}.shareProcessNamespace"),
)
_REASON = re.compile(r"^containers\[(\d+)\]\.([A-Za-z_.]+(?:\[[^\]]*\])?)")


def _source(data: dict[str, Any], index: int) -> dict[str, Any] | None:
    containers = data.get("containers") or []
    if not 0 <= index < len(containers) or not isinstance(containers[index], dict):
        return None
    source = containers[index].get("yaml")
    return source if isinstance(source, dict) else None


def yaml_hints(reasons: list[str], data: dict[str, Any]) -> list[str]:
    """``reasons`` plus, for each one about a policy container the generator annotated with its YAML
    source (``containers[i].yaml``), the YAML field that would have to change."""
    out = list(reasons)
    for reason in reasons:
        m = _REASON.match(reason)
        source = _source(data, int(m.group(1))) if m else None
        if m is None or source is None:
            continue
        field = re.sub(r"\[\d+\]", "", m.group(2))
        for prefix, template in _YAML_FIELDS:
            if field.startswith(prefix):
                where = template.format(c=source.get("path", ""), pod=source.get("pod", ""))
                out.append(f"YAML: {source.get('resource')} {where} would have to change (or regenerate)")
                break
    return out

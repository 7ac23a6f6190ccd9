"""The OCI process a container's policy expects: capabilities, args, env, cwd and the user.

The order of steps is genpolicy's, because each step can overwrite the one before (image config,
then the YAML, then the pod's and the container's securityContext).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .env import EnvContext, container_env, substitute_args, substitute_env
from .errors import GenerateError
from .images import ImageInfo

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class User:
    uid: int = 0
    gid: int = 0
    additional: set[int] | None = None

    def __post_init__(self) -> None:
        if self.additional is None:
            self.additional = set()

    @property
    def gids(self) -> set[int]:
        assert self.additional is not None
        return self.additional

    def to_json(self) -> dict[str, Any]:
        return {"UID": self.uid, "GID": self.gid, "AdditionalGids": sorted(self.gids), "Username": ""}


def _security_context(obj: Mapping[str, Any]) -> dict[str, Any]:
    sc = obj.get("securityContext")
    return sc if isinstance(sc, dict) else {}


def _int(value: Any, resource: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 32:
        raise GenerateError(resource, where, f"got {value!r}", "an integer id between 0 and 2^32-1")
    return value


def capabilities(container: Mapping[str, Any], common: Mapping[str, Any], privileged: bool) -> dict[str, Any]:
    base = list(common["privileged_caps"] if privileged else common["default_caps"])
    sets = {"Bounding": list(base), "Effective": list(base), "Permitted": list(base)}
    caps = _security_context(container).get("capabilities") or {}
    for cap in caps.get("drop") or []:
        for values in sets.values():
            if cap == "ALL":
                values.clear()
            else:
                while f"CAP_{cap}" in values:
                    values.remove(f"CAP_{cap}")
    for cap in caps.get("add") or []:
        for values in sets.values():
            if f"CAP_{cap}" not in values:
                values.append(f"CAP_{cap}")
    for key, values in sets.items():
        if values == list(common["default_caps"]):
            sets[key] = ["$(default_caps)"]
        elif values == list(common["privileged_caps"]):
            sets[key] = ["$(privileged_caps)"]
    return {
        "Ambient": [],
        "Bounding": sets["Bounding"],
        "Effective": sets["Effective"],
        "Inheritable": [],
        "Permitted": sets["Permitted"],
    }


class ProcessBuilder:
    """Builds one container's expected process."""

    def __init__(
        self,
        resource: str,
        where: str,
        pod_spec: Mapping[str, Any],
        container: Mapping[str, Any],
        image: ImageInfo,
        is_pause: bool,
        guest_pull: bool,
        pod_path: str = "spec",
    ) -> None:
        self.resource = resource
        self.where = where
        self.pod_spec = pod_spec
        self.container = container
        self.image = image
        self.is_pause = is_pause
        self.guest_pull = guest_pull
        self.pod_path = pod_path  # YAML path of the pod spec, for errors

    def _image_user(self, user: User) -> None:
        image_user = self.image.user
        if not image_user:
            return
        image_gid: int | None = None
        if ":" in image_user:
            parts = image_user.split(":")
            if len(parts) == 2:
                user.uid = self.image.uid_of(parts[0])
                if self.is_pause:
                    image_gid = self.image.gid_of(parts[1])
        else:
            user.uid = self.image.uid_of(image_user)
        gid = image_gid if image_gid is not None else self.image.gid_of_uid(user.uid)
        if gid is not None:
            user.gid = gid
            user.gids.add(gid)

    def _args(self) -> list[str]:
        config = self.image.config
        command = self.container.get("command")
        args = self.container.get("args")
        out = [str(a) for a in command or []] + [str(a) for a in args or []]
        if command is None and isinstance(config.get("Entrypoint"), list):
            out = [str(a) for a in config["Entrypoint"]] + out
        if command is None and args is None and isinstance(config.get("Cmd"), list):
            out += [str(a) for a in config["Cmd"]]
        return out

    def _pod_user(self, user: User, process: dict[str, Any]) -> bool:
        sc = _security_context(self.pod_spec)
        must_check_passwd = False
        if "runAsUser" in sc:
            user.uid = _int(sc["runAsUser"], self.resource, f"{self.pod_path}.securityContext.runAsUser")
            must_check_passwd = True
        if "runAsGroup" in sc:
            user.gid = _int(sc["runAsGroup"], self.resource, f"{self.pod_path}.securityContext.runAsGroup")
            user.gids.clear()
            user.gids.add(user.gid)
            must_check_passwd = False
        if "allowPrivilegeEscalation" in sc:
            process["NoNewPrivileges"] = not sc["allowPrivilegeEscalation"]
        return must_check_passwd

    def _pod_groups(self, user: User) -> None:
        sc = _security_context(self.pod_spec)
        pause_overridden = self.is_pause and ("runAsUser" in sc or "runAsGroup" in sc)
        if self.is_pause and (self.image.has_configured_user or pause_overridden):
            return
        if "fsGroup" in sc:
            user.gids.add(_int(sc["fsGroup"], self.resource, f"{self.pod_path}.securityContext.fsGroup"))
        for i, gid in enumerate(sc.get("supplementalGroups") or []):
            user.gids.add(
                _int(gid, self.resource, f"{self.pod_path}.securityContext.supplementalGroups[{i}]")
            )

    def _container_user(self, user: User, process: dict[str, Any]) -> None:
        sc = _security_context(self.container)
        if "runAsUser" in sc:
            user.uid = _int(sc["runAsUser"], self.resource, f"{self.where}.securityContext.runAsUser")
            gid = self.image.gid_of_uid(user.uid)
            if gid is not None:
                user.gid = gid
            user.gids.add(user.gid)
        if "runAsGroup" in sc:
            user.gid = _int(sc["runAsGroup"], self.resource, f"{self.where}.securityContext.runAsGroup")
            user.gids.add(user.gid)
        if "allowPrivilegeEscalation" in sc:
            process["NoNewPrivileges"] = not sc["allowPrivilegeEscalation"]
        user.gids.update(self.image.additional_gids(user.uid))

    def _check_guest_pull_identity(self, user: User) -> None:
        """Under guest pull containerd never sees the image's passwd: the YAML must state the identity."""
        if self.is_pause or not self.guest_pull:
            return
        pod_sc, sc = _security_context(self.pod_spec), _security_context(self.container)
        run_as_user = sc.get("runAsUser", pod_sc.get("runAsUser"))
        run_as_group = sc.get("runAsGroup", pod_sc.get("runAsGroup"))
        explicit = set(pod_sc.get("supplementalGroups") or [])
        if "fsGroup" in pod_sc:
            explicit.add(pod_sc["fsGroup"])
        missing = []
        if user.uid != 0 and run_as_user != user.uid:
            missing.append(f"securityContext.runAsUser: {user.uid}")
        if user.gid != 0 and run_as_group != user.gid:
            missing.append(f"securityContext.runAsGroup: {user.gid}")
        extra = sorted(g for g in user.gids if g != user.gid and g not in explicit)
        if extra:
            missing.append(f"{self.pod_path}.securityContext.supplementalGroups: {extra}")
        if missing:
            raise GenerateError(
                self.resource,
                f"{self.where}.securityContext",
                f"image {self.image.reference} implies uid={user.uid} gid={user.gid} "
                f"groups={sorted(user.gids)} that containerd cannot see when the guest pulls the image",
                "explicit " + ", ".join(missing),
            )

    def build(
        self,
        env_ctx: EnvContext,
        container_settings: Mapping[str, Any],
        common: Mapping[str, Any],
        privileged: bool,
    ) -> dict[str, Any]:
        config = self.image.config
        process: dict[str, Any] = {"Terminal": bool(config.get("Tty", False)), "NoNewPrivileges": False}
        user = User()
        self._image_user(user)
        env: list[str] = (
            [str(e) for e in config["Env"]] if isinstance(config.get("Env"), list) else [DEFAULT_PATH]
        )
        args = self._args()
        cwd = (
            config.get("WorkingDir")
            if isinstance(config.get("WorkingDir"), str) and config["WorkingDir"]
            else "/"
        )
        if not self.is_pause:
            user.gids.add(user.gid)
        tty = self.container.get("tty")
        if isinstance(tty, bool):
            process["Terminal"] = tty
            if tty and not self.is_pause:
                env.append("TERM=xterm")
        if not self.is_pause:
            env.append("HOSTNAME=$(host-name)")
        container_env(self.container, env_ctx, self.where, env)
        substitute_env(env)
        substitute_args(args, env)
        defaults = container_settings.get("Process", {})
        args += [a for a in defaults.get("Args", []) if a not in args]
        env += [e for e in defaults.get("Env", []) if e not in env]
        if self._pod_user(user, process):
            gid = self.image.gid_of_uid(user.uid)
            user.gid = gid if gid is not None else 0
            user.gids.clear()
            user.gids.add(user.gid)
        self._pod_groups(user)
        self._container_user(user, process)
        self._check_guest_pull_identity(user)
        out: dict[str, Any] = {"Terminal": process["Terminal"], "User": user.to_json()}
        if args:
            out["Args"] = args
        if env:
            out["Env"] = env
        out["Cwd"] = cwd
        out["Capabilities"] = capabilities(self.container, common, privileged)
        out["NoNewPrivileges"] = process["NoNewPrivileges"]
        return out

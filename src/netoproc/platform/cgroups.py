"""Which container or systemd unit a process belongs to, from its cgroup (Linux).

The kernel's owner events carry the process's cgroup v2 id, which is the
inode number of its directory under the cgroup2 mount; the fallback reads
`/proc/<pid>/cgroup`. Either way a cgroup path is classified here by the
shapes the runtimes and systemd give them:

- Docker: `.../docker-<64 hex>.scope` (systemd driver), `/docker/<64 hex>`;
- Podman: `.../libpod-<64 hex>.scope`, `libpod-conmon-<id>.scope` (its
  monitor, counted with the container), `/libpod_parent/libpod-<id>`;
- Kubernetes (containerd, CRI-O): `kubepods.../pod<uid>/cri-containerd-<id>.scope`,
  `crio-<id>.scope`, `/kubepods/<class>/pod<uid>/<id>`;
- systemd: the outermost `.service` or `.scope` below the slices
  (`system.slice/nginx.service`, `user.slice/user-1000.slice/user@1000.service`).

Container names come from the runtimes' state files when they are readable
(Docker's `config.v2.json`, Podman's `containers.json`, the kubelet's log
directory names), under `/` or, where the host's files are mounted elsewhere
(netoproc itself in a container), under `NETOP_RUNTIME_ROOT`; without them a
container is shown by its short id, never by an error. Paths are untrusted
bytes: undecodable ones are shown as `\\xNN`, and every label is cut to
`MAX_LABEL` characters.
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from dataclasses import dataclass

MAX_LABEL = 96
MAX_CGROUPS = 65536  # cgroup directories mapped by a walk; a machine with more is cut short
MAX_NAMED = 4096  # labels kept, by cgroup path
MAX_MISSED = 4096  # unknown cgroup ids remembered, so each costs one walk at most
MAX_STATE_BYTES = 4 << 20  # a runtime state file larger than this is not read

_ID = r"([0-9a-f]{64})"
_CONTAINER_SHAPES = (
    ("docker", re.compile(rf"^docker-{_ID}\.scope$")),
    ("podman", re.compile(rf"^libpod-(?:conmon-)?{_ID}(?:\.scope)?$")),
    ("k8s", re.compile(rf"^(?:cri-containerd|crio|crio-conmon|containerd)-{_ID}\.scope$")),
)
_POD = re.compile(r"^(?:kubepods.*-)?pod([0-9a-f_-]{36})(?:\.slice)?$")
_BARE_ID = re.compile(rf"^{_ID}$")


@dataclass(frozen=True, slots=True)
class Group:
    """What a cgroup path says: a container (`kind` docker, podman or k8s, `ident`
    its full id, `pod` a Kubernetes pod uid) or a systemd unit (`kind` "unit",
    `ident` the unit's name)."""

    kind: str
    ident: str
    pod: str = ""


def _decoded(raw: str | bytes) -> str:
    """A path component as text: bytes from the file system, undecodable ones as \\xNN."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


def classify(path: str | bytes) -> Group | None:
    """The container or unit a cgroup path names, or None (the root, a slice, an
    unrecognised shape)."""
    parts = [p for p in _decoded(path).split("/") if p]
    pod = ""
    kube = False  # below a kubepods cgroup
    for i, part in enumerate(parts):
        m = _POD.match(part)
        kube = kube or part.startswith("kubepods")
        if m and kube:
            pod = m.group(1).replace("_", "-")
            continue
        for kind, shape in _CONTAINER_SHAPES:
            m = shape.match(part)
            if m:
                return Group("k8s" if pod else kind, m.group(1), pod)
        if _BARE_ID.match(part) and i > 0:
            parent = parts[i - 1]
            if parent == "docker":
                return Group("docker", part)
            if pod:
                return Group("k8s", part, pod)
    for part in parts:
        if part.endswith((".service", ".scope")):
            return Group("unit", part)
        if not part.endswith(".slice"):
            return None
    return None


def _cut(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


def cgroup2_mount(mountinfo: str = "/proc/self/mountinfo") -> tuple[str, str] | None:
    """(mount point, the cgroup path it shows) of the cgroup2 hierarchy, if mounted."""
    try:
        with open(mountinfo, "rb") as f:
            text = f.read(1 << 20)
    except OSError:
        return None
    for line in text.split(b"\n"):
        fields = line.split(b" ")
        if b"-" not in fields:
            continue
        dash = fields.index(b"-")
        if len(fields) > dash + 1 and fields[dash + 1] == b"cgroup2" and len(fields) > 4:
            root, point = (_unescape(fields[3]), _unescape(fields[4]))
            return os.fsdecode(point), os.fsdecode(root)
    return None


def _unescape(field: bytes) -> bytes:
    """mountinfo's octal escapes (space, tab, newline, backslash)."""
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), field)


def pid_cgroups(pid: int, proc_root: str = "/proc") -> list[bytes]:
    """The cgroup paths of a process, as raw bytes, the most telling first: its
    cgroup v2 path, then a cgroup v1 machine's name=systemd path, then the other
    v1 hierarchies' (a runtime with the cgroupfs driver on v1 uses those); empty
    if /proc cannot be read."""
    try:
        with open(f"{proc_root}/{pid}/cgroup", "rb") as f:
            text = f.read(1 << 16)
    except OSError:
        return []
    found: list[bytes] = []
    # The v2 line comes last; a directory name may hold a newline, so its path is
    # everything after "0::" but the final newline.
    line = 0 if text.startswith(b"0::") else text.find(b"\n0::") + 1
    if line >= 0 and text.startswith(b"0::", line):
        text, v2 = text[: max(0, line - 1)], text[line + 3 :].removesuffix(b"\n")
        found.append(v2)
    lines = [line.split(b":", 2) for line in text.split(b"\n")]
    v1 = [parts[2] for parts in lines if len(parts) == 3]
    found += [p for parts, p in zip(lines, v1, strict=False) if b"name=systemd" in parts[1]]
    found += v1
    return [p for i, p in enumerate(found) if p not in (b"/", b"") and p not in found[:i]]


def pid_cgroup(pid: int, proc_root: str = "/proc") -> bytes | None:
    """The most telling cgroup path of a process (see `pid_cgroups`), or None."""
    paths = pid_cgroups(pid, proc_root)
    return paths[0] if paths else None


class RuntimeNames:
    """Container names from the runtimes' state files, each optional."""

    def __init__(self, root: str = "/") -> None:
        self.root = root.rstrip("/")
        self._podman: dict[str, str] | None = None
        self._pods: dict[str, tuple[str, str]] | None = None  # pod uid -> (namespace, pod)
        self._k8s: dict[str, tuple[str, str, str]] | None = None  # id -> (ns, pod, container)

    def _read(self, path: str) -> bytes | None:
        try:
            with open(self.root + path, "rb") as f:
                data = f.read(MAX_STATE_BYTES + 1)
        except OSError:
            return None
        return data if len(data) <= MAX_STATE_BYTES else None

    def docker(self, ident: str) -> str:
        data = self._read(f"/var/lib/docker/containers/{ident}/config.v2.json")
        try:
            name = json.loads(data)["Name"] if data else ""
        except (ValueError, KeyError, TypeError):
            return ""
        return name.lstrip("/") if isinstance(name, str) else ""

    def podman(self, ident: str) -> str:
        if self._podman is None or ident not in self._podman:
            self._podman = {}
            for base in ("/var/lib/containers/storage", "/run/containers/storage"):
                data = self._read(f"{base}/overlay-containers/containers.json")
                try:
                    entries = json.loads(data) if data else []
                except ValueError:
                    continue
                for entry in entries if isinstance(entries, list) else []:
                    if isinstance(entry, dict):
                        names = entry.get("names")
                        if isinstance(entry.get("id"), str) and isinstance(names, list) and names:
                            self._podman[entry["id"]] = str(names[0])
        return self._podman.get(ident, "")

    def kubernetes(self, ident: str, pod: str) -> tuple[str, str, str]:
        """(namespace, pod, container) as far as the kubelet's log directories tell."""
        if self._k8s is None or ident not in self._k8s:
            self._k8s = {}
            for entry in _listdir(self.root + "/var/log/containers"):
                # <pod>_<namespace>_<container>-<64 hex id>.log
                m = re.match(rf"^([^_]+)_([^_]+)_(.+)-{_ID}\.log$", entry)
                if m:
                    self._k8s[m.group(4)] = (m.group(2), m.group(1), m.group(3))
        found = self._k8s.get(ident)
        if found:
            return found
        if self._pods is None or pod not in self._pods:
            self._pods = {}
            for entry in _listdir(self.root + "/var/log/pods"):
                parts = entry.split("_")  # <namespace>_<pod>_<uid>
                if len(parts) == 3:
                    self._pods[parts[2]] = (parts[0], parts[1])
        namespace, name = self._pods.get(pod, ("", ""))
        return namespace, name, ""


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)[:MAX_CGROUPS]
    except OSError:
        return []


class CgroupNames:
    """Labels for cgroups: by the kernel's cgroup id (eBPF) or by a process's
    /proc entry (fallback). `docker/web`, `podman/4f2a9c01d3e7`,
    `k8s/default/web-7d9f/nginx`, `nginx.service`; "" for none."""

    def __init__(
        self,
        proc_root: str = "/proc",
        state_root: str | None = None,
        mount: tuple[str, str] | None = None,
    ) -> None:
        if state_root is None:
            state_root = os.environ.get("NETOP_RUNTIME_ROOT") or "/"
        self.proc_root = proc_root
        self.mount = mount if mount is not None else cgroup2_mount(f"{proc_root}/self/mountinfo")
        self.runtimes = RuntimeNames(state_root)
        self._paths: dict[int, bytes] = {}  # cgroup id -> path
        self._missed: OrderedDict[int, None] = OrderedDict()
        self._labels: OrderedDict[bytes, str] = OrderedDict()
        self.walks = 0

    def of_id(self, cgroup_id: int) -> str | None:
        """The label of the cgroup with this id (its directory's inode number); ""
        for a cgroup of no container or unit, None for an id not found here (no
        cgroup2 mount here, or the cgroup is gone)."""
        if not cgroup_id or self.mount is None:
            return None
        path = self._paths.get(cgroup_id)
        if path is None:
            if cgroup_id in self._missed:
                return None
            self._walk()
            path = self._paths.get(cgroup_id)
            if path is None:
                self._missed[cgroup_id] = None
                if len(self._missed) > MAX_MISSED:
                    self._missed.popitem(last=False)
                return None
        return self.label(path)

    def of_pid(self, pid: int) -> str:
        """The label of a running process's first cgroup path that names a container
        or unit (see `pid_cgroups`)."""
        for path in pid_cgroups(pid, self.proc_root):
            label = self.label(path)
            if label:
                return label
        return ""

    def label(self, path: bytes) -> str:
        label = self._labels.get(path)
        if label is None:
            label = self._labels[path] = self._name(classify(path))
            if len(self._labels) > MAX_NAMED:
                self._labels.popitem(last=False)
        return label

    def _name(self, group: Group | None) -> str:
        if group is None:
            return ""
        if group.kind == "unit":
            return _cut(group.ident)
        short = group.ident[:12]
        if group.kind == "docker":
            name = self.runtimes.docker(group.ident)
        elif group.kind == "podman":
            name = self.runtimes.podman(group.ident)
        else:
            if not group.pod:  # containerd or CRI-O outside Kubernetes
                return f"containerd/{short}"
            namespace, pod, container = self.runtimes.kubernetes(group.ident, group.pod)
            pod_text = f"{namespace}/{pod}" if pod else f"pod{group.pod[:8]}"
            return _cut(_decoded(f"k8s/{pod_text}/{container or short}"))
        return _cut(f"{group.kind}/{_decoded(name) if name else short}")

    def _walk(self) -> None:
        """Map every cgroup directory's inode number to its path (bounded)."""
        assert self.mount is not None
        point, shown = self.mount
        base = os.fsencode(point)
        prefix = os.fsencode(shown).rstrip(b"/")
        self.walks += 1
        paths: dict[int, bytes] = {}
        try:
            paths[os.stat(base).st_ino] = prefix or b"/"  # the root: no group
        except OSError:
            return
        stack = [b""]
        while stack and len(paths) < MAX_CGROUPS:
            rel = stack.pop()
            try:
                entries = os.scandir(base + rel if rel else base)
            except OSError:
                continue
            with entries:
                for entry in entries:
                    try:
                        if not entry.is_dir(follow_symlinks=False):
                            continue
                        inode = entry.inode()
                    except OSError:
                        continue
                    sub = rel + b"/" + entry.name
                    paths[inode] = prefix + sub
                    stack.append(sub)
        self._paths = paths

"""Containers and units from cgroup paths: every runtime's shapes, names from
state files, ids when names are missing, and hostile bytes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from netoproc.output.text import printable
from netoproc.platform.cgroups import (
    MAX_LABEL,
    CgroupNames,
    Group,
    cgroup2_mount,
    classify,
    pid_cgroup,
    pid_cgroups,
)

ID = "4f2a9c01d3e7" + "ab" * 26
OTHER = "0123456789ab" + "cd" * 26
POD = "9b1c2d3e-1111-2222-3333-444455556666"


@pytest.mark.parametrize(
    ("path", "group"),
    [
        (f"/system.slice/docker-{ID}.scope", Group("docker", ID)),
        (f"/docker/{ID}", Group("docker", ID)),
        (f"/docker/{ID}/init", Group("docker", ID)),
        (f"/machine.slice/libpod-{ID}.scope", Group("podman", ID)),
        (f"/machine.slice/libpod-{ID}.scope/container", Group("podman", ID)),
        (f"/machine.slice/libpod-conmon-{ID}.scope", Group("podman", ID)),
        (f"/libpod_parent/libpod-{ID}", Group("podman", ID)),
        (
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
            f"{POD.replace('-', '_')}.slice/cri-containerd-{ID}.scope",
            Group("k8s", ID, POD),
        ),
        (f"/kubepods/besteffort/pod{POD}/{ID}", Group("k8s", ID, POD)),
        (
            f"/kubepods.slice/kubepods-pod{POD.replace('-', '_')}.slice/crio-{ID}.scope",
            Group("k8s", ID, POD),
        ),
        (f"/system.slice/containerd.service/cri-containerd-{ID}.scope", Group("k8s", ID)),
        ("/system.slice/nginx.service", Group("unit", "nginx.service")),
        (
            "/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service",
            Group("unit", "user@1000.service"),
        ),
        ("/user.slice/user-1000.slice/session-3.scope", Group("unit", "session-3.scope")),
        ("/init.scope", Group("unit", "init.scope")),
        ("/", None),
        ("", None),
        ("/system.slice", None),
        ("/my/own/thing", None),
        (f"/elsewhere/{ID}", None),  # a bare id outside docker/ or a pod is no container
        ("/system.slice/docker-abc.scope", Group("unit", "docker-abc.scope")),  # not an id
    ],
)
def test_shapes(path: str, group: Group | None) -> None:
    assert classify(path) == group
    assert classify(path.encode()) == group


def test_hostile_paths_never_break_and_never_inject(tmp_path: Path) -> None:
    names = CgroupNames(proc_root=str(tmp_path), state_root=str(tmp_path), mount=None)
    escape = b"/system.slice/\x1b[31mevil\nname\t\xff\xfe.service"
    label = names.label(escape)
    assert "\x1b" in label and "\\xff\\xfe" in label  # raw here; escaped by every format
    shown = printable(label)
    assert shown.isprintable() and "\n" not in shown and "\t" not in shown
    huge = names.label(b"/system.slice/" + b"x" * 10_000 + b".service")
    assert len(huge) == MAX_LABEL and huge.endswith("…")
    assert names.label(b"/system.slice/\xe2\x80\xae-rtl.service") == "\u202e-rtl.service"
    assert printable("\u202e") == "\\u202e"
    assert names.label(b"//////") == ""
    assert names.label(b"/" + b"a/" * 5000) == ""


def state_files(root: Path) -> None:
    docker = root / "var/lib/docker/containers" / ID
    docker.mkdir(parents=True)
    (docker / "config.v2.json").write_text(json.dumps({"ID": ID, "Name": "/web"}))
    storage = root / "var/lib/containers/storage/overlay-containers"
    storage.mkdir(parents=True)
    (storage / "containers.json").write_text(json.dumps([{"id": ID, "names": ["db"]}]))
    logs = root / "var/log/containers"
    logs.mkdir(parents=True)
    (logs / f"web-7d9f_default_nginx-{ID}.log").write_text("")
    pods = root / "var/log/pods"
    pods.mkdir(parents=True)
    (pods / f"shop_cart-5c_{POD}").mkdir()


def test_names_from_state_files(tmp_path: Path) -> None:
    state_files(tmp_path)
    names = CgroupNames(proc_root=str(tmp_path), state_root=str(tmp_path), mount=None)
    assert names.label(f"/system.slice/docker-{ID}.scope".encode()) == "docker/web"
    assert names.label(f"/machine.slice/libpod-{ID}.scope".encode()) == "podman/db"
    assert names.label(f"/kubepods/burstable/pod{POD}/{ID}".encode()) == (
        "k8s/default/web-7d9f/nginx"
    )
    # a container the kubelet's logs do not name: its pod still is
    assert names.label(f"/kubepods/burstable/pod{POD}/{OTHER}".encode()) == (
        f"k8s/shop/cart-5c/{OTHER[:12]}"
    )


def test_missing_or_broken_metadata_degrades_to_ids(tmp_path: Path) -> None:
    names = CgroupNames(proc_root=str(tmp_path), state_root=str(tmp_path), mount=None)
    assert names.label(f"/docker/{ID}".encode()) == f"docker/{ID[:12]}"
    assert names.label(f"/machine.slice/libpod-{ID}.scope".encode()) == f"podman/{ID[:12]}"
    assert names.label(f"/kubepods/pod{POD}/{ID}".encode()) == f"k8s/pod{POD[:8]}/{ID[:12]}"
    broken = tmp_path / "broken"
    docker = broken / "var/lib/docker/containers" / OTHER
    docker.mkdir(parents=True)
    (docker / "config.v2.json").write_bytes(b"{not json\xff")
    storage = broken / "var/lib/containers/storage/overlay-containers"
    storage.mkdir(parents=True)
    (storage / "containers.json").write_text('{"id": 1}')
    names = CgroupNames(proc_root=str(tmp_path), state_root=str(broken), mount=None)
    assert names.label(f"/docker/{OTHER}".encode()) == f"docker/{OTHER[:12]}"
    assert names.label(f"/libpod_parent/libpod-{OTHER}".encode()) == f"podman/{OTHER[:12]}"


def test_proc_cgroup_lines(tmp_path: Path) -> None:
    def write(pid: int, text: bytes) -> None:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cgroup").write_bytes(text)

    write(1, b"12:pids:/\n1:name=systemd:/\n0::/system.slice/nginx.service\n")
    write(2, b"1:name=systemd:/system.slice/cron.service\n0::/\n")  # v1 only (hybrid, root v2)
    write(3, b"0::/system.slice/odd\nname.service\n")  # a newline inside the last line's path
    write(4, b"")
    # a cgroup v1 machine whose runtime uses the cgroupfs driver, without systemd
    write(6, b"4:memory:/docker/" + ID.encode() + b"\n1:cpu:/docker/" + ID.encode() + b"\n")
    # v2 at the root, the container only in v1 (a hybrid machine's podman)
    write(7, b"1:name=systemd:/libpod_parent/libpod-" + ID.encode() + b"\n0::/\n")
    assert pid_cgroup(1, str(tmp_path)) == b"/system.slice/nginx.service"
    assert pid_cgroup(2, str(tmp_path)) == b"/system.slice/cron.service"
    assert pid_cgroup(3, str(tmp_path)) == b"/system.slice/odd\nname.service"
    assert pid_cgroup(4, str(tmp_path)) is None
    assert pid_cgroup(5, str(tmp_path)) is None
    assert pid_cgroups(6, str(tmp_path)) == [f"/docker/{ID}".encode()]
    names = CgroupNames(proc_root=str(tmp_path), state_root=str(tmp_path), mount=None)
    assert names.of_pid(1) == "nginx.service"
    assert names.of_pid(5) == ""
    assert names.of_pid(6) == f"docker/{ID[:12]}"
    assert names.of_pid(7) == f"podman/{ID[:12]}"
    assert names.of_id(12345) is None  # no cgroup2 mount to look ids up in


def test_mountinfo(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_bytes(
        b"31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
        b"41 31 0:38 /ctr /sys/fs/cgroup/uni\\040fied rw,relatime - cgroup2 cgroup2 rw\n"
    )
    assert cgroup2_mount(str(info)) == ("/sys/fs/cgroup/uni fied", "/ctr")
    info.write_bytes(b"garbage\n\n- - -\n")
    assert cgroup2_mount(str(info)) is None
    assert cgroup2_mount(str(tmp_path / "none")) is None


def test_ids_are_directory_inodes_found_by_a_walk(tmp_path: Path) -> None:
    """A fake cgroup2 tree: ids are inode numbers, a new directory is found by one
    more walk, an id never seen costs one walk only."""
    unit = tmp_path / "system.slice" / "nginx.service"
    unit.mkdir(parents=True)
    names = CgroupNames(proc_root=str(tmp_path), state_root=str(tmp_path),
                        mount=(str(tmp_path), "/"))  # fmt: skip
    assert names.of_id(os.stat(unit).st_ino) == "nginx.service"
    assert names.walks == 1
    container = tmp_path / "system.slice" / f"docker-{ID}.scope"
    container.mkdir()
    assert names.of_id(os.stat(container).st_ino) == f"docker/{ID[:12]}"
    assert names.walks == 2
    assert names.of_id(123456789) is None and names.walks == 3
    assert names.of_id(123456789) is None and names.walks == 3
    assert names.of_id(0) is None
    assert names.of_id(os.stat(tmp_path).st_ino) == ""  # the root: known, in no group
    hostile = tmp_path / os.fsdecode(b"\x1b]0;x\x07\xff.service")
    hostile.mkdir()
    label = names.of_id(os.stat(hostile).st_ino)
    assert label == "\x1b]0;x\x07\\xff.service"


def test_this_machines_own_cgroups_never_fail() -> None:
    names = CgroupNames()
    assert isinstance(names.of_pid(os.getpid()), str)
    assert isinstance(names.of_pid(1), str)
    if names.mount is not None:
        assert names.of_id(os.stat(names.mount[0]).st_ino) == ""

from __future__ import annotations

from traceprobe_agent.pod_cgroups import pod_uid, under

UID = "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"


def test_cgroupfs_and_systemd_layouts() -> None:
    assert pod_uid(f"/kubepods/burstable/pod{UID}/0123abcd") == UID
    assert pod_uid(f"/kubepods/pod{UID}") == UID
    systemd = (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod"
               f"{UID.replace('-', '_')}.slice/cri-containerd-99.scope")
    assert pod_uid(systemd) == UID
    assert pod_uid(f"/traceprobe-test/node-1/kubepods/pod{UID}/main") == UID


def test_not_a_pod() -> None:
    assert pod_uid("/system.slice/sshd.service") is None
    assert pod_uid("/") is None and pod_uid(None) is None
    assert pod_uid("/kubepods/burstable/podnotauid/x") is None


def test_subtree() -> None:
    assert under("/traceprobe-test/node-1/kubepods/pod1/main", "/traceprobe-test/node-1")
    assert not under("/traceprobe-test/node-10/x", "/traceprobe-test/node-1")
    assert under("/a", "/a/") and not under(None, "/")


# As a real kubelet (v1.34, cgroupfs driver) and containerd 1.6 + runc name them on a
# hybrid cgroup layout: the same path in every v1 controller and under cgroup2 (`0::`),
# for an app container and for the pod's sandbox (pause) container.
REAL_NODE_PATHS = [
    "/kubepods/besteffort/pod8d4b6c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e/"
    "5e0f3b0c6a9d8e7f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7081",
    "/kubepods/burstable/pod8d4b6c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e/"
    "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",
    "/kubepods/pod8d4b6c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e/"
    "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
]


def test_real_kubelet_paths() -> None:
    for path in REAL_NODE_PATHS:
        assert pod_uid(path) == "8d4b6c1e-2f3a-4b5c-9d8e-7f6a5b4c3d2e", path
    assert pod_uid("/kubepods/besteffort") is None and pod_uid("/kubepods") is None

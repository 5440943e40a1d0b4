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


# Seen in /proc/<pid>/cgroup of containers on the test tier's real node (kubelet v1.34,
# cgroupfs driver, containerd 1.6 + runc, hybrid layout): the same path in every v1
# controller and under cgroup2 (`0::`). QoS classes: a pod without resources, the agent
# pod (requests below limits).
REAL_NODE_PATHS = {
    "/kubepods/besteffort/pod7bc005dd-70b8-4867-85d8-abb25e9d6b27/"
    "a62ae03396f73d294a99bcc2fad1333711be1d6638343cf49342c23559e203c1":
        "7bc005dd-70b8-4867-85d8-abb25e9d6b27",
    "/kubepods/burstable/pod1d655d98-666a-4a0a-9a2e-1d3145cbf4c1/"
    "3f241ae0198611c49b8fae85f92a6aee2de694860f45c5039565f2bbcc20c2a5":
        "1d655d98-666a-4a0a-9a2e-1d3145cbf4c1",
}


def test_real_kubelet_paths() -> None:
    for path, uid in REAL_NODE_PATHS.items():
        assert pod_uid(path) == uid, path
    assert pod_uid("/kubepods/besteffort") is None and pod_uid("/kubepods") is None

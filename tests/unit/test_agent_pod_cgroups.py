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

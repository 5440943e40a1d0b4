"""The real node's configuration (pure): containerd, CNI, the kubelet, kube-proxy and
CoreDNS, as the files and objects they read."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from harness.node_host import CNI_BIN_DIR, CNI_BRIDGE

CLUSTER_DOMAIN = "cluster.local"
DNS_SERVICE_IP = "10.235.0.10"
POD_CIDR = "10.234.0.0/16"
NODE_POD_CIDR, POD_GATEWAY = "10.234.0.0/24", "10.234.0.1"
SERVICE_CIDR = "10.235.0.0/16"


def containerd_config(base: Path, sock: Path, sandbox_image: str, cni_conf_dir: Path) -> str:
    """containerd 1.6 with its root, state and socket under `base`, CRI with runc and CNI."""
    return f"""version = 2
root = "{base / 'root'}"
state = "{base / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{sock}"

[ttrpc]
  address = "{sock}.ttrpc"

[debug]
  level = "info"

[plugins."io.containerd.internal.v1.opt"]
  path = "{base / 'opt'}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # This VM's capability bounding set lacks CAP_SYS_RESOURCE: runc cannot lower
  # /proc/self/oom_score_adj below the parent's without it.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{shutil.which('runc')}"
        Root = "{base / 'state' / 'runc'}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni_conf_dir}"
    max_conf_num = 1
"""


def coredns_manifests(image: str) -> list[dict[str, Any]]:
    """CoreDNS as the cluster DNS: the kube-dns Service at DNS_SERVICE_IP, no forwarding
    (nothing a pod asks may leave the machine)."""
    labels = {"k8s-app": "kube-dns"}
    corefile = f"""\
.:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
    loop
    loadbalance
}}
"""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "coredns", "namespace": "kube-system"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "system:coredns"},
         "rules": [
             {"apiGroups": [""], "resources": ["endpoints", "services", "pods",
                                               "namespaces"],
              "verbs": ["list", "watch"]},
             {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
              "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns",
                       "namespace": "kube-system"}]},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "coredns", "namespace": "kube-system"},
         "data": {"Corefile": corefile}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
         "spec": {
             "replicas": 1, "selector": {"matchLabels": labels},
             "template": {"metadata": {"labels": labels}, "spec": {
                 "serviceAccountName": "coredns", "dnsPolicy": "Default",
                 "priorityClassName": "system-cluster-critical",
                 "containers": [{
                     "name": "coredns", "image": image,
                     "imagePullPolicy": "Never",
                     "args": ["-conf", "/etc/coredns/Corefile"],
                     "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                               {"name": "dns-tcp", "containerPort": 53,
                                "protocol": "TCP"}],
                     "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns",
                                       "readOnly": True}],
                     "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181},
                                        "periodSeconds": 1},
                     "livenessProbe": {"httpGet": {"path": "/health", "port": 8080},
                                       "periodSeconds": 10},
                     "securityContext": {"allowPrivilegeEscalation": False,
                                         "readOnlyRootFilesystem": True,
                                         "capabilities": {"drop": ["ALL"],
                                                          "add": ["NET_BIND_SERVICE"]}},
                 }],
                 "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
             }}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
         "spec": {"selector": labels, "clusterIP": DNS_SERVICE_IP, "ports": [
             {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
             {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}]}},
    ]


def cni_conflist(ipam_dir: Path, node_ip: str) -> dict[str, Any]:
    """bridge + host-local + portmap; containerd itself calls loopback."""
    conflist: dict[str, Any] = {
        "cniVersion": "1.0.0", "name": "traceprobe-node",
        "plugins": [
            {"type": "bridge", "bridge": CNI_BRIDGE, "isGateway": True, "ipMasq": False,
             "hairpinMode": True,
             "ipam": {"type": "host-local",
                      "dataDir": str(ipam_dir),
                      "ranges": [[{"subnet": NODE_POD_CIDR, "gateway": POD_GATEWAY}]],
                      # No default route: pods reach pods, Services and the
                      # node IP, and nothing off this machine (ENETUNREACH).
                      "routes": [{"dst": POD_CIDR}, {"dst": SERVICE_CIDR},
                                 {"dst": f"{node_ip}/32"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    return conflist


def kubelet_config(node_ip: str, port: int, healthz_port: int, pki: Path,
                   containerd_sock: Path, pod_logs: Path) -> dict[str, Any]:
    """The KubeletConfiguration: serving on the node IP with the harness CA's certificate,
    webhook authn/z, the cgroupfs driver."""
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": node_ip, "port": port, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": healthz_port,
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{containerd_sock}",
        # Hybrid cgroup layout, no systemd as PID 1: the cgroupfs driver is the
        # one that works; runc mirrors each container into cgroup2 (unified).
        "cgroupDriver": "cgroupfs", "cgroupsPerQOS": True, "failCgroupV1": False,
        "failSwapOn": False, "enforceNodeAllocatable": [],
        "clusterDNS": [DNS_SERVICE_IP], "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": "",  # no host resolver: nothing may leave this machine
        "podLogsDir": str(pod_logs),
        "rotateCertificates": False, "serverTLSBootstrap": False,
        "registerNode": True, "maxPods": 110, "podCIDR": NODE_POD_CIDR,
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                         "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False,
        "syncFrequency": "10s", "fileCheckFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
    }
    return config


def kube_proxy_config(node_name: str, node_ip: str, kubeconfig: Path, healthz_port: int,
                      metrics_port: int) -> dict[str, Any]:
    """kube-proxy in iptables mode, leaving the host's conntrack sysctls alone."""
    config: dict[str, Any] = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "hostnameOverride": node_name, "bindAddress": node_ip,
        "clusterCIDR": POD_CIDR,
        "healthzBindAddress": f"127.0.0.1:{healthz_port}",
        "metricsBindAddress": f"127.0.0.1:{metrics_port}",
        "nodePortAddresses": [f"{node_ip}/32"],
        # Leave the host's conntrack sysctls alone (0 = do not set).
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                      "tcpCloseWaitTimeout": "0s"},
        # No route_localnet=1 on the host: NodePorts are not served on 127.0.0.1.
        "iptables": {"localhostNodePorts": False, "minSyncPeriod": "0s",
                     "syncPeriod": "30s"},
    }
    return config

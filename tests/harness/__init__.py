"""The local test world: real etcd + kube-apiserver, a real OpenTelemetry
Collector, network-namespace pods and kube-proxy-style Services, real BPF.

Each part is a plain class usable outside pytest (benchmarks, the demo); the
fixtures in ``tests/conftest.py`` only wire them up and tear them down.
"""

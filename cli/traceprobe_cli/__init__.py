"""`traceprobe`: the service map and the probes' health from a terminal.

Reaches the cluster the kubectl way (kubeconfig, `--kubeconfig`, `--context`)
and the service map through the API server's service proxy, so it needs no
port-forward and the map component no port of its own beyond its Service.
Only `traceprobe_cli.kube` talks to Kubernetes; the rest is pure formatting.
"""

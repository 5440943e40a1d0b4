"""The traceprobe node agent: eBPF programs in, connection records out."""

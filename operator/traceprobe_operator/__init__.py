"""The traceprobe operator: reconciles TraceProbe resources into node agents.

The folder ``operator/`` holds this package but is not a package itself:
a package named ``operator`` would shadow the standard library.
"""

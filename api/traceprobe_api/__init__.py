"""Shared API models of traceprobe.

Both the operator and the node agent import this package; it imports neither
(an import-linter contract enforces that), so it stays the single source of
truth for what crosses the wire between them.
"""

__version__ = "0.1.0"

API_GROUP = "traceprobe.io"
API_VERSION = "v1alpha1"

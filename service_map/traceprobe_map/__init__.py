"""The service map: per-node edge reports in, one cluster map out.

Runs in the control plane (the operator's image); it resolves remote
addresses centrally, so agents only watch their own node's pods.
"""

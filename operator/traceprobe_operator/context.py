"""What every handler of one operator process shares, carried in kopf's `memo`.

The startup handler builds it once; kopf copies the operator's memo into each
object's memo (shallowly), so every handler sees this same instance.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import kopf

from traceprobe_operator.kube import Kube
from traceprobe_operator.settings import OperatorSettings

MEMO_KEY = "traceprobe"


@dataclass(frozen=True)
class OperatorContext:
    settings: OperatorSettings
    kube: Kube
    # Reconciles run in worker threads and each rewrites the whole DaemonSet from
    # a listing of the probes: one at a time, or an older listing could win.
    daemonset_lock: threading.Lock = field(default_factory=threading.Lock)


def operator_context(memo: kopf.Memo) -> OperatorContext:
    found = memo.get(MEMO_KEY)
    if not isinstance(found, OperatorContext):
        raise RuntimeError("no operator context in memo: the startup handler has not run")
    return found

"""Memory of the service map's state: metadata per pod and a full window.

tracemalloc over a whole window run would take a quarter of an hour here (every
allocation 5-15x slower), so the window is weighed by walking its objects
(`deep_size`: within 3% of tracemalloc on the same objects) and only the
transient allocations of one bucket's merge and of one snapshot are traced.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import BuiltinFunctionType, FunctionType, ModuleType
from typing import Any

from benchmarks.map_cluster import T0, Cluster, api_objects, load
from traceprobe_map.metadata import MetadataCache
from traceprobe_map.peers import Resolver
from traceprobe_map.window import MapWindow

_SHARED = (type, ModuleType, FunctionType, BuiltinFunctionType)


def deep_size(roots: Iterable[Any], exclude: Iterable[Any] = ()) -> int:
    """Bytes of the objects reachable from `roots` (each once), not crossing `exclude`,
    classes, modules or functions."""
    seen = {id(x) for x in exclude}
    stack = list(roots)
    size = 0
    referents, getsizeof = gc.get_referents, sys.getsizeof
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _SHARED):
            continue
        seen.add(id(obj))
        size += getsizeof(obj)
        stack.extend(referents(obj))
    return size


def traced_peak(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated while `fn` runs, above what existed before."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def metadata(cluster: Cluster) -> tuple[MetadataCache, int, int]:
    """A cache fed the whole cluster; bytes it keeps, bytes of the objects as received."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    objects = list(api_objects(cluster))
    received = tracemalloc.get_traced_memory()[0] - before
    cache = MetadataCache(Resolver())
    load(cache, iter(objects), T0 - 3600)
    del objects
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return cache, kept, received


@dataclass
class WindowMemory:
    before_close: int  # a full window with the newest bucket's records just in
    close_transient: int  # traced peak of merging the due bucket
    at_rest: int  # after it
    pending: int  # of which records not merged yet
    snapshot_transient: int  # traced peak of one snapshot()
    one_interval: int  # one interval's records as received

    @property
    def peak(self) -> int:
        return max(self.before_close + self.close_transient,
                   self.at_rest + self.snapshot_transient)


def window_memory(window: MapWindow, add: Callable[[], Any], close: Callable[[], Any],
                  snapshot: Callable[[], Any], one_interval: list[Any]) -> WindowMemory:
    """Weigh a full window around one more bucket: `add` its records, `close` due buckets."""
    def state() -> int:
        gc.collect()
        return deep_size([window.contents()], exclude=[window.resolver])

    add()
    before = state()
    close_transient = traced_peak(close)
    at_rest = state()
    pending = deep_size([window.contents().open], exclude=[window.resolver])
    return WindowMemory(before, close_transient, at_rest, pending, traced_peak(snapshot),
                        deep_size([one_interval], exclude=[window.resolver]))

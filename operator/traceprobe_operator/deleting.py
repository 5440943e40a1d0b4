"""Deleting a probe: hold it until its agents detach (bounded), then let it go.

The finalizer goes once the agents report the probe detached or the detach timeout
passes. Letting go is itself an update of the probe, which the API server can
refuse (an admission policy, say): then a Warning says why, and the release is
retried with a bounded backoff until it is allowed, instead of the probe hanging
in Terminating without a word.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from traceprobe_operator import objects
from traceprobe_operator.context import OperatorContext
from traceprobe_operator.kube import describe, refused
from traceprobe_operator.retries import Backoff, Said

#: After the detach timeout, how long failing API calls may hold a deleted probe
#: before the operator lets it go anyway (saying so).
GIVE_UP_AFTER_SECONDS = 30.0


def waited_seconds(body: Any, now: datetime) -> float:
    deleted_at = objects.meta(body).get("deletionTimestamp")
    if not deleted_at:
        return 0.0
    return (now - datetime.fromisoformat(str(deleted_at).replace("Z", "+00:00"))
            ).total_seconds()


async def wait_for_detach(ctx: OperatorContext, body: Any, logger: kopf.Logger,
                          step: Callable[[], Awaitable[None]]) -> None:
    """Run `step` (which raises kopf.TemporaryError while agents are attached) until it
    passes; API failures are retried with backoff, said once, and given up on after
    the detach timeout plus GIVE_UP_AFTER_SECONDS."""
    backoff, said = Backoff(first=1.0, cap=10.0), Said()
    limit = ctx.settings.detach_timeout_seconds + GIVE_UP_AFTER_SECONDS
    while True:
        try:
            await step()
            return
        except kopf.TemporaryError as exc:
            await asyncio.sleep(exc.delay or 2.0)
        except Exception as exc:  # said, retried, bounded
            text = describe(exc)
            if waited_seconds(body, datetime.now(UTC)) >= limit:
                kopf.warn(body, reason="DeleteIncomplete",
                          message=f"letting the probe go although the agents could not be "
                                  f"updated: {text}")
                return
            delay = backoff.failed(time.monotonic())
            if said.new("delete", text):
                logger.warning(f"deleting: {text}; retrying in {delay:.0f}s")
            await asyncio.sleep(delay)


async def release_when_allowed(ctx: OperatorContext, body: Any, logger: kopf.Logger) -> None:
    """Return once the API server would let the finalizer go (kopf then removes it),
    the finalizer is gone, or the probe is."""
    kind, namespace, name = objects.key(body)
    backoff, said = Backoff(first=5.0, cap=60.0), Said()
    while True:
        try:
            current = await asyncio.to_thread(ctx.kube.get_probe, kind, namespace, name)
            if current is None or objects.FINALIZER not in objects.finalizers(current):
                return
            rest = [f for f in objects.finalizers(current) if f != objects.FINALIZER]
            await asyncio.to_thread(ctx.kube.set_finalizers, kind, namespace, name,
                                    str(objects.meta(current).get("resourceVersion")), rest,
                                    True)
        except ApiException as exc:
            if exc.status == 409:  # changed meanwhile: ask again about the new version
                await asyncio.sleep(0.2)
                continue
            if exc.status == 404:
                return
            delay = backoff.failed(time.monotonic())
            if refused(exc) and said.new("release", describe(exc)):
                kopf.warn(body, reason="FinalizerRemovalRefused", message=(
                    f"the API server refuses removing finalizer {objects.FINALIZER}, so the "
                    f"probe stays until it allows it: {describe(exc)}; asking again every "
                    f"{backoff.cap:.0f}s at most"))
                logger.warning(f"cannot let the probe go: {describe(exc)}")
            elif said.new("release", describe(exc)):
                logger.warning(f"cannot ask about letting the probe go: {describe(exc)}; "
                               f"retrying in {delay:.0f}s")
            await asyncio.sleep(delay)
            continue
        except Exception as exc:  # unreachable API server: retried
            delay = backoff.failed(time.monotonic())
            if said.new("release", describe(exc)):
                logger.warning(f"cannot ask about letting the probe go: {describe(exc)}; "
                               f"retrying in {delay:.0f}s")
            await asyncio.sleep(delay)
            continue
        if said.last.get("release"):
            logger.info("the API server allows removing the finalizer now")
        return

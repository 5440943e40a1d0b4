"""`python -m traceprobe_operator`: run the operator cluster-wide."""

from __future__ import annotations

import argparse
import asyncio

import kopf


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="traceprobe-operator", description=__doc__)
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    # Prefix object messages with [namespace/name]: logs must say which probe.
    kopf.configure(verbose=args.verbose, log_prefix=True)
    from traceprobe_operator import handlers  # registers the handlers

    del handlers
    asyncio.run(kopf.operator(clusterwide=True))


if __name__ == "__main__":
    main()

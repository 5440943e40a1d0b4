"""`python -m traceprobe_operator`: run the operator cluster-wide."""

from __future__ import annotations

import argparse
import asyncio
import logging

import kopf


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="traceprobe-operator", description=__doc__)
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from traceprobe_operator import handlers  # registers the handlers

    del handlers
    asyncio.run(kopf.operator(clusterwide=True))


if __name__ == "__main__":
    main()

"""`python -m traceprobe_operator`: run the operator cluster-wide.

Flags, environment and kubeconfig are checked before kopf starts: a bad one is one
line on stderr and exit status 2. An API server that cannot be reached is no bad
input: kopf keeps retrying it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any, NoReturn

from traceprobe_operator.settings import OperatorSettings, SettingsError, one_line

PROG = "traceprobe-operator"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # The message quotes the arguments as given: keep it one printable line.
        shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)
        raise SettingsError(f"{shown}; the only flags are --verbose and --help")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0], allow_abbrev=False,
                     epilog="Settings come from the environment: see "
                            "traceprobe_operator.settings.")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def _kubeconfig_source() -> str:
    if "KUBECONFIG" in os.environ:
        return f"KUBECONFIG={one_line(os.environ['KUBECONFIG'])}"
    return "the kubeconfig ~/.kube/config (or the pod's ServiceAccount)"


def api_client() -> Any:
    """The API client for this process; SettingsError when the credentials are unusable
    (traceprobe_api.kubeconfig checks the file, its YAML and its server URL)."""
    from traceprobe_api.kubeconfig import KubeconfigError, load_api_client

    try:
        return load_api_client()
    except KubeconfigError as exc:
        raise SettingsError(f"{_kubeconfig_source()}: {' '.join(str(exc).split())}; "
                            "expected a readable kubeconfig (YAML) or an in-cluster "
                            "ServiceAccount") from None


def _usage_error(message: str) -> NoReturn:
    print(f"{PROG}: {message}", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    # Flags and variables first, before the heavy imports: a typo costs no second.
    try:
        args = parse_args(argv)
        settings = OperatorSettings.from_env()
        client = api_client()
    except SettingsError as exc:
        _usage_error(str(exc))
    import kopf

    from traceprobe_operator.context import MEMO_KEY, OperatorContext
    from traceprobe_operator.kube import Kube

    # Prefix object messages with [namespace/name]: logs must say which probe.
    kopf.configure(verbose=args.verbose, log_prefix=True)
    from traceprobe_operator import handlers  # registers the handlers

    del handlers
    memo = kopf.Memo({MEMO_KEY: OperatorContext(settings, Kube(client))})
    asyncio.run(kopf.operator(clusterwide=True, memo=memo))


if __name__ == "__main__":
    main()

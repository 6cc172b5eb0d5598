"""`python -m qrun.fakes PROVIDER [--port N ...]`: serve a provider's fake until Ctrl-C.

PROVIDER is a provider id (braket.aws, qiskit.ibm, pasqal.cloud, quandela.cloud, or a
plugin's); the fake is the class its spec names (a qrun.fakes.server.FakeServer), whose
``main`` reads the rest: the flags every fake shares, then its own.
"""

from __future__ import annotations

import sys
from typing import cast


def main(argv: list[str] | None = None) -> int:
    from qrun.fakes.server import FakeServer
    from qrun.providers import PROVIDERS

    argv = sys.argv[1:] if argv is None else argv
    with_fakes = sorted(pid for pid, spec in PROVIDERS.items() if spec.fake)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"usage: python -m qrun.fakes PROVIDER [options]; PROVIDER is one of: "
              f"{', '.join(with_fakes)}; PROVIDER --help lists its options")
        return 0 if argv else 2
    provider, rest = argv[0], argv[1:]
    if provider not in with_fakes:
        print(f"no fake service for {provider!r}; choose one of: {', '.join(with_fakes)}",
              file=sys.stderr)
        return 2
    cast(type[FakeServer], PROVIDERS[provider].fake_class()).main(rest)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The command line both GPU profiles share (per_sample_profile.py, graph_profile.py): ``--json FILE``
(a new file) and ``--repeats N``, the one-line no-GPU exit, the JSON with the machine, the table."""

from __future__ import annotations

import sys
from typing import Any, Callable

import gpunet
from gpunet.backend import cupy_unavailable_reason
from gpunet.bench import gpu_machine
from gpunet.cli import OneLineParser
from gpunet.files import output_path, write_json

Cases = list[dict[str, Any]]


def main(argv: list[str] | None, doc: str, repeated: str, measure: Callable[..., Cases],
         format_table: Callable[[Cases], str], default_repeats: int = 50) -> int:
    """Parse ``argv`` (``doc``'s first paragraph the description; ``repeated`` what --repeats counts), run
    ``measure(backend, repeats)`` on CuPy, write --json and print ``format_table`` of the cases. Without a
    usable GPU: one line saying why, exit status 1."""
    p = OneLineParser(description=doc.split("\n\n")[0])
    p.add_argument("--json", metavar="FILE", help="also write the figures here (a new file)")
    p.add_argument("--repeats", type=int, default=default_repeats,
                   help=f"{repeated} per timed round (default: {default_repeats})")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1; got {args.repeats}")
    try:
        out = output_path(args.json, hint="choose another --json") if args.json else None
    except OSError as exc:
        p.error(f"--json: {exc}")
    reason = cupy_unavailable_reason()
    if reason is not None:
        print(f"no usable GPU: {reason}", file=sys.stderr)
        return 1
    cases = measure(gpunet.get_backend("cupy"), args.repeats)
    if out is not None:
        write_json(out, {"machine": gpu_machine(), "repeats": args.repeats, "cases": cases})
    print(format_table(cases))
    return 0

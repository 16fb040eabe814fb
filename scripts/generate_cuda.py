"""Write the CUDA headers that are generated from gpunet's tables (activations.cuh from gpunet/activations.py,
optim_rules.cuh from gpunet/optim.py).

    python scripts/generate_cuda.py [--check]

--check writes nothing and exits 1 if a header differs from what the tables generate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# This checkout's gpunet, ahead of any installed one: the headers written are those of the tables beside them
# (an editable install of another checkout, or a worktree's, would otherwise be the one read and written).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpunet.engines import kernels  # noqa: E402

GENERATED = {"activations.cuh": kernels.activations_header, "optim_rules.cuh": kernels.optim_rules_header}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 where a header is stale")
    args = parser.parse_args(argv)
    stale = []
    for name, generate in GENERATED.items():
        path, text = kernels.SOURCE_DIR / name, generate()
        if not path.exists() or path.read_text() != text:
            stale.append(name)
            if not args.check:
                path.write_text(text)
    for name in stale:
        print(f"{name}: {'stale' if args.check else 'written'}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())

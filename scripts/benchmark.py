"""gpunet side by side with PyTorch, scikit-learn and the article's plain per-sample code; prints a table, writes JSON.

    python scripts/benchmark.py            # the full run (a few minutes on 2 cores)
    python scripts/benchmark.py --quick    # a small version, seconds

The same as `gpunet bench`; see gpunet/bench.py for what is measured and how.
"""

import sys

from gpunet.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))

"""The fuzz suite (tests/test_fuzz.py) run longer, with fresh random inputs, and how many inputs
each generator tried.

    python benchmarks/fuzz.py --examples 2000

CI runs the same generators with RA_LITE_FUZZ_EXAMPLES=60 (the default) and a fixed seed; this
script sets RA_LITE_FUZZ_EXAMPLES and RA_LITE_FUZZ_RANDOM=1 and prints hypothesis' statistics
(inputs tried per test, time), then pytest's verdict. A failure prints the shrunk input that
broke the property: keep it as a regression test in tests/test_fuzz.py.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2000, help="inputs per generator")
    parser.add_argument("-k", default=None, help="only the generators whose test matches")
    args = parser.parse_args()
    env = {**os.environ, "RA_LITE_FUZZ_EXAMPLES": str(args.examples), "RA_LITE_FUZZ_RANDOM": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "tests/test_fuzz.py", "--hypothesis-show-statistics",
               "-W", "ignore::DeprecationWarning"] + (["-k", args.k] if args.k else [])
    return subprocess.call(command, cwd=REPO, env=env)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Runs the ag2 clients suite: every `test_*.py` beside this file, each case against `hubsim
serve` and, where the case says so, against ag2's own `serve_ws`.

    python tests/ag2_clients/run.py --hubsim target/release/hubsim [-k PATTERN]...

`-k` keeps the tests whose name contains PATTERN (unittest's `-k`; e.g. `-k hubsim`, `-k
keepalive`). Ends with `ag2-clients: N passed, N failed` and exits 1 on any failure or error.
Run it with a Python that has ag2 1.2.1 and websockets (`.ci/ag2-clients` makes one).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hubsim", required=True, help="the hubsim binary")
    parser.add_argument("-k", dest="patterns", action="append", default=[], help="only tests whose name has this")
    args = parser.parse_args()
    os.environ["HUBSIM_BIN"] = str(Path(args.hubsim).resolve())
    sys.dont_write_bytecode = True  # no __pycache__ beside the sources
    sys.path.insert(0, str(HERE))

    loader = unittest.TestLoader()
    loader.testNamePatterns = [f"*{pattern}*" for pattern in args.patterns] or None
    suite = loader.discover(str(HERE), pattern="test_*.py", top_level_dir=str(HERE))
    start = time.monotonic()
    result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
    # A test that fails and then errors in its clean-up counts once.
    failing = {test.id() for test, _ in result.failures + result.errors}
    failed = len(failing | {test.id() for test in result.unexpectedSuccesses})
    passed = result.testsRun - failed - len(result.skipped)
    print(f"ag2-clients: {result.testsRun} tests in {time.monotonic() - start:.1f} s")
    print(f"ag2-clients: {passed} passed, {failed} failed, {len(result.skipped)} skipped")
    return 0 if failed == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())

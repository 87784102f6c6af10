#!/usr/bin/env python3
"""Runs the integration suite like
    python3 -m unittest discover -s Tests/integration -t Tests/integration -v
and ends with one plain line "integration: N passed, N failed, N skipped".

    GATEHOUSE_BIN=.build/debug/gatehouse python3 Tests/integration/run.py [-k PATTERN] [-f]
"""

import argparse
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", dest="patterns", action="append", default=None,
                    help="only tests matching this substring (repeatable)")
    ap.add_argument("-f", "--failfast", action="store_true")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()

    sys.path.insert(0, HERE)
    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = ["*%s*" % p for p in args.patterns]
    suite = loader.discover(start_dir=HERE, top_level_dir=HERE)
    runner = unittest.TextTestRunner(verbosity=1 if args.quiet else 2, failfast=args.failfast,
                                     stream=sys.stdout)
    t0 = time.monotonic()
    result = runner.run(suite)
    # A test with several failing subtests counts once; a failed setUpClass (an
    # _ErrorHolder, not a test that ran) counts as one failure.
    failed_ids, holders = set(), set()
    for test, _ in result.failures + result.errors:
        if type(test).__name__ == "_ErrorHolder":
            holders.add(test.id())
        else:
            failed_ids.add(getattr(test, "test_case", test).id())
    failed_ids.update(t.id() for t in result.unexpectedSuccesses)
    skipped = len({t.id() for t, _ in result.skipped} - failed_ids)
    passed = result.testsRun - len(failed_ids) - skipped - len(result.expectedFailures)
    print("ran %d tests in %.0f s" % (result.testsRun, time.monotonic() - t0))
    print("integration: %d passed, %d failed, %d skipped" % (passed, len(failed_ids) + len(holders), skipped))
    sys.stdout.flush()
    return 0 if result.wasSuccessful() and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Runs one test module of the Python package, or reports it skipped (exit status 77, which
CTest counts as a skip) when this interpreter cannot import PyTorch or every test skipped
itself (e.g. the GPU tests on a machine without one).

    python3 run_tests.py test_linear
"""

import sys
import unittest

SKIP = 77

if __name__ == "__main__":
    try:
        import torch  # noqa: F401
    except ImportError as e:
        print(f"skipped: {sys.executable} cannot import torch ({e}); install python3-torch (Debian) or PyTorch")
        sys.exit(SKIP)
    suite = unittest.defaultTestLoader.loadTestsFromNames(sys.argv[1:])
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    if not result.wasSuccessful():
        sys.exit(1)
    if result.testsRun > 0 and len(result.skipped) == result.testsRun:
        print("skipped: every test skipped itself (reasons above)")
        sys.exit(SKIP)
    sys.exit(0)

"""Run pytest while CPU-burning processes keep the cores busy, then stop them (always).

    python tests/under_load.py [--burners N] -- PYTEST_ARGS...

The timing-sensitive tests (the interrupt tests of tests/test_evaluate.py, the memory guards of
tests/test_fast_path_guards.py) must pass on a machine that is busy: CI runs them this way. Exit
status: pytest's.
"""

import argparse
import multiprocessing
import subprocess
import sys


def burn():
    while True:
        pass


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burners", type=int, default=2, help="CPU-burning processes (default 2)")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    pytest_args = args.pytest_args[1:] if args.pytest_args[:1] == ["--"] else args.pytest_args
    burners = [multiprocessing.Process(target=burn, daemon=True) for _ in range(args.burners)]
    try:
        for p in burners:
            p.start()
        return subprocess.call([sys.executable, "-m", "pytest", *pytest_args])
    finally:
        for p in burners:
            p.terminate()
        for p in burners:
            p.join(5)
            if p.is_alive():
                p.kill()


if __name__ == "__main__":
    sys.exit(main())

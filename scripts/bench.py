"""The benchmark's entry point, as ./scripts/bench runs it: the benchmark itself is the
package beside this file (scripts/benchmark/, whose docstring gives the method)."""

import sys

from benchmark.cli import main

if __name__ == "__main__":
    sys.exit(main())

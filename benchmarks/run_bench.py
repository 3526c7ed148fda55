"""Runs ``jaxbp bench`` from the source tree: ``PYTHONPATH=src python benchmarks/run_bench.py
[options]`` takes exactly the options of ``jaxbp bench`` and runs the same code
(:mod:`jaxbp.cli.bench`, :mod:`jaxbp.bench`).

The full run that regenerates docs/benchmarks.md::

    PYTHONPATH=src python benchmarks/run_bench.py --json benchmarks/results/cpu.json
"""

from __future__ import annotations

import sys

from jaxbp.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))

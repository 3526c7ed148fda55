"""``python -m jaxbp`` — the same as the ``jaxbp`` console script."""

import sys

from jaxbp.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""`python -m layerwise.demo`: see `layerwise.demo.cli`."""

import sys

from layerwise.demo.cli import main

if __name__ == "__main__":
    sys.exit(main())

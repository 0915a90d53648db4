"""The demo: `python -m layerwise.demo` (see `layerwise/demo/__main__.py`)."""

"""The observation stack: metrics on any intermediate tensor (`observe`,
`ObservedModel`) and capturing intermediate outputs (`capture`). Public
names are re-exported by `layerwise`."""

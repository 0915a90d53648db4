"""The optimizer stack: what the user declares (rules, selectors,
transforms, schedules), the plan computed from it at build, the stages a
step runs through, and `LayerwiseOptimizer`, the Keras facade composing
them. Public names are re-exported by `layerwise`."""

"""The reparameterization stack: a layer's weight computed from a raw
parameter in the forward pass (`parametrize`, spectral and weight
normalization, `SetLearningRate`). Public names are re-exported by
`layerwise`."""

"""Every reach into Keras internals, in one place.

`layerwise` uses Keras' public API everywhere else. What Keras offers no
public API for lives here, split by what it touches:

- `optimizers`: private methods of `keras.optimizers.Optimizer` that
  `LayerwiseOptimizer` drives below `apply()`, and the backend switches of
  the update.
- `layers`: a built layer's tracker and per-instance method overrides, for
  `parametrize`.
- `models`: a Functional model's topological depths and graph of calls
  (parents, inputs, outputs; which calls are products), for `detect_blocks`.
- `trainers`: the trainer's stateless scope and step signature, for
  `observe` / `capture`.
- `callbacks`: what Keras' `SwapEMAWeights` reads of an optimizer, for
  handing it the wrapper's averages.

`trainers` and `models` import from `keras.src`; `optimizers`, `layers`
and `callbacks` use private attributes of public classes.

Each module has a test (`tests/internals/test_*.py`) that fails loudly if
Keras moves what it relies on; a Keras upgrade is adapted here and only here.
"""

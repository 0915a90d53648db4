"""The stages of `LayerwiseOptimizer`'s step, one concept each: each owns
its variables, builds them, and does its part of the step."""

"""Why a JAX micro-step is not free: the cost of a `lax.cond` that carries
the training state, in plain JAX (no Keras).

State: 12 parameters of 800k floats with Adam slots and accumulators
(154 MB), one jitted step with donated state. Variants:

- `acc_only`: add the gradients to the accumulators, nothing else (the floor);
- `cond_micro`: the accumulation step as `LayerwiseOptimizer` builds it on
  JAX: `lax.cond(is_real_step, adam_update, identity)` carrying weights,
  slots and accumulators; the predicate is false (a micro-step);
- `while_micro`: the same with a `lax.while_loop` that runs the update 0 or
  1 times (predicate false);
- `while_real`: that loop when it runs the update once;
- `full_update`: an Adam update with no control flow.

Usage:
    python benchmarks/jax_cond_copy.py
"""

import statistics
import time

import jax
import jax.numpy as jnp

N, K = 800_000, 12


def init():
    zeros = lambda: [jnp.zeros(N) for _ in range(K)]  # noqa: E731
    return dict(w=[jnp.ones(N) for _ in range(K)], m=zeros(), v=zeros(), acc=zeros(),
                c=jnp.array(0))


def adam(w, m, v, g):
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    return w - 1e-3 * m / (jnp.sqrt(v) + 1e-7), m, v


def real_step(operand):
    w, m, v, acc = operand
    out = [adam(*x, a / 4) for x, a in zip(zip(w, m, v), acc)]
    return ([o[0] for o in out], [o[1] for o in out], [o[2] for o in out],
            [jnp.zeros_like(a) for a in acc])


def accumulate(s, g):
    return [a + gi for a, gi in zip(s["acc"], g)]


def acc_only(s, g):
    return dict(s, acc=accumulate(s, g), c=s["c"] + 1)


def cond_micro(s, g):
    w, m, v, acc = jax.lax.cond(s["c"] < 0, real_step, lambda op: op,
                                (s["w"], s["m"], s["v"], accumulate(s, g)))
    return dict(w=w, m=m, v=v, acc=acc, c=s["c"] + 1)


def _while(s, g, run):
    def body(carry):
        return real_step(carry[0]), jnp.array(False)

    (w, m, v, acc), _ = jax.lax.while_loop(
        lambda carry: carry[1], body, ((s["w"], s["m"], s["v"], accumulate(s, g)), run))
    return dict(w=w, m=m, v=v, acc=acc, c=s["c"] + 1)


def while_micro(s, g):
    return _while(s, g, s["c"] < 0)


def while_real(s, g):
    return _while(s, g, s["c"] >= 0)


def full_update(s, g):
    out = [adam(*x, gi) for x, gi in zip(zip(s["w"], s["m"], s["v"]), g)]
    return dict(s, w=[o[0] for o in out], m=[o[1] for o in out], v=[o[2] for o in out],
                c=s["c"] + 1)


def main():
    g = [jnp.full(N, 0.1) for _ in range(K)]
    print(f"jax {jax.__version__}, {K} x {N} parameters, state {4 * 4 * K * N / 1e6:.0f} MB")
    for fn in (acc_only, cond_micro, while_micro, while_real, full_update):
        step = jax.jit(fn, donate_argnums=0)
        s = step(init(), g)
        jax.block_until_ready(s)
        times = []
        for _ in range(30):
            start = time.perf_counter()
            s = step(s, g)
            jax.block_until_ready(s)
            times.append(time.perf_counter() - start)
        print(f"  {fn.__name__:<12} median {statistics.median(times) * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()

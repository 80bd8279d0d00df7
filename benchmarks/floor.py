"""The hardware floor: the training step's five matrix products, each timed alone at its best rate.

A step of the chapter's model (batch B, hidden H, 784 inputs, 10 classes) multiplies five matrices;
everything else in it (bias, relu, softmax, the optimizer) is elementwise and cheap beside them.
The input layer needs no input gradient, so there is no sixth product. The floor is the time these
five products would take at the best rate measured for each, with numpy (OpenBLAS) or XLA, summed
over an epoch: no training loop can be faster without doing less work or computing faster.
Each product is timed back to back (numpy into one output array, XLA inside one compiled loop), so
the per-call cost of Python, dispatch and allocating the result is not counted as product time.

    python -m benchmarks.floor [--batch-size 128] [--hidden 512] [--device cpu|gpu]
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

INPUTS, CLASSES, TRAIN_SIZE = 28 * 28, 10, 60_000


class Product(NamedTuple):
    """One matrix product of the step, with its operands as the step stores them."""

    name: str
    lhs: tuple[int, int]
    rhs: tuple[int, int]
    transpose_lhs: bool = False
    transpose_rhs: bool = False

    @property
    def mkn(self) -> tuple[int, int, int]:
        m, k = self.lhs[::-1] if self.transpose_lhs else self.lhs
        n = self.rhs[0] if self.transpose_rhs else self.rhs[1]
        return m, k, n

    @property
    def flops(self) -> int:
        m, k, n = self.mkn
        return 2 * m * k * n


def step_products(batch: int = 128, hidden: int = 512) -> list[Product]:
    """The five products of one training step; x is (B, 784), h (B, H), dlogits (B, 10)."""
    return [
        Product("h = x @ W1", (batch, INPUTS), (INPUTS, hidden)),
        Product("logits = h @ W2", (batch, hidden), (hidden, CLASSES)),
        Product("dW2 = h.T @ dlogits", (batch, hidden), (batch, CLASSES), transpose_lhs=True),
        Product("dh = dlogits @ W2.T", (batch, CLASSES), (hidden, CLASSES), transpose_rhs=True),
        Product("dW1 = x.T @ dh", (batch, INPUTS), (batch, hidden), transpose_lhs=True),
    ]


def epoch_flops(samples: int = TRAIN_SIZE, hidden: int = 512) -> int:
    """FLOPs of one epoch's products: 2*(2*784*H + 3*H*10) per image (chapter: 98.2 GFLOP)."""
    return samples * 2 * (2 * INPUTS * hidden + 3 * hidden * CLASSES)


def _best_seconds(call: Callable[[], object], budget: float, min_calls: int = 5) -> float:
    """Fastest of repeated calls, run for about `budget` seconds (and at least `min_calls`)."""
    best, spent, calls = math.inf, 0.0, 0
    while calls < min_calls or spent < budget:
        start = time.perf_counter()
        call()
        elapsed = time.perf_counter() - start
        best, spent, calls = min(best, elapsed), spent + elapsed, calls + 1
    return best


def _operands(product: Product, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal(product.lhs, dtype=np.float32),
        rng.standard_normal(product.rhs, dtype=np.float32),
    )


# Products per timed call when timing back to back: a single call of a 10 us product would mostly
# time the call itself (dispatch, allocating the result), which a training step does not repeat.
REPEATS = 20


def time_numpy(product: Product, budget: float = 0.2, repeats: int = REPEATS) -> float:
    """Best seconds per product with numpy (OpenBLAS), `repeats` back to back into one output.

    Transposes are views: BLAS reads them in place.
    """
    a, b = _operands(product)
    a, b = (a.T if product.transpose_lhs else a), (b.T if product.transpose_rhs else b)
    out = np.empty((a.shape[0], b.shape[1]), np.float32)

    def run():
        for _ in range(repeats):
            np.matmul(a, b, out=out)

    return _best_seconds(run, budget) / repeats


def xla_product_loop(product: Product, repeats: int = REPEATS, device: str = "cpu"):
    """(run, a, b): `run(a, b)` computes the product `repeats` times in one jitted loop and
    returns the last result, with operands a and b placed on `device`.

    The operands pass through an optimization barrier each iteration, so XLA can neither hoist the
    product out of the loop nor fold the transposes into a cheaper layout of its own choosing.
    """
    import jax
    from jax import lax

    tl, tr = product.transpose_lhs, product.transpose_rhs
    m, _, n = product.mkn

    @jax.jit
    def run(a, b):
        def body(_, carry):
            a, b, _ = lax.optimization_barrier(carry)
            return a, b, (a.T if tl else a) @ (b.T if tr else b)

        return lax.fori_loop(0, repeats, body, (a, b, jax.numpy.zeros((m, n), a.dtype)))[2]

    target = jax.devices(device)[0]
    a, b = (jax.device_put(x, target) for x in _operands(product))
    return run, a, b


def time_xla(product: Product, budget: float = 0.2, device: str = "cpu", repeats: int = REPEATS):
    """Best seconds per product with XLA, `repeats` back to back in one compiled loop, as a
    training step's products run inside one compiled program."""
    run, a, b = xla_product_loop(product, repeats, device)
    run(a, b).block_until_ready()  # compile outside the timing
    return _best_seconds(lambda: run(a, b).block_until_ready(), budget) / repeats


def xla_sees(device: str) -> bool:
    """Whether JAX has a `device` ("cpu" or "gpu") backend in this process."""
    import jax

    try:
        return bool(jax.devices(device))
    except RuntimeError:
        return False


def measure_floor(
    batch: int = 128,
    hidden: int = 512,
    samples: int = TRAIN_SIZE,
    device: str = "cpu",
    budget: float = 0.2,
) -> dict:
    """Each product's best numpy and XLA time, and the epoch floor they imply.

    On a GPU the floor uses XLA's rates only (numpy runs on the host). Steps count fractionally
    (samples / batch): the ragged last batch does proportionally less work.
    """
    steps = samples / batch
    rows = []
    for product in step_products(batch, hidden):
        numpy_s, xla_s = time_numpy(product, budget), time_xla(product, budget, device)
        best = xla_s if device != "cpu" else min(numpy_s, xla_s)
        rows.append(
            {
                "name": product.name,
                "mkn": list(product.mkn),
                "flops": product.flops,
                "numpy_seconds": numpy_s,
                "xla_seconds": xla_s,
                "numpy_gflops": product.flops / numpy_s / 1e9,
                "xla_gflops": product.flops / xla_s / 1e9,
                "best_seconds": best,
            }
        )
    return {
        "batch_size": batch,
        "hidden": hidden,
        "samples": samples,
        "device": device,
        "steps": steps,
        "epoch_flops": epoch_flops(samples, hidden),
        "products": rows,
        "seconds": steps * sum(r["best_seconds"] for r in rows),
        "numpy_seconds": steps * sum(r["numpy_seconds"] for r in rows),
        "xla_seconds": steps * sum(r["xla_seconds"] for r in rows),
    }


def best_of(*floors: dict) -> dict:
    """Per product, the fastest of several measurements of the same floor (a noisy machine)."""
    merged = {**floors[0], "products": []}
    for rows in zip(*(f["products"] for f in floors), strict=True):
        row = dict(rows[0])
        for key in ("numpy", "xla", "best"):
            row[f"{key}_seconds"] = min(r[f"{key}_seconds"] for r in rows)
        row["numpy_gflops"] = row["flops"] / row["numpy_seconds"] / 1e9
        row["xla_gflops"] = row["flops"] / row["xla_seconds"] / 1e9
        merged["products"].append(row)
    for key in ("", "numpy_", "xla_"):
        per_step = sum(r[f"{key or 'best_'}seconds"] for r in merged["products"])
        merged[f"{key}seconds"] = merged["steps"] * per_step
    return merged


def markdown(floor: dict) -> str:
    """The per-product table: shapes, work, and the rate each library reached."""
    lines = [
        "| product | m x k x n | MFLOP | numpy GFLOP/s | XLA GFLOP/s | XLA / numpy time |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in floor["products"]:
        m, k, n = r["mkn"]
        lines.append(
            f"| `{r['name']}` | {m}x{k}x{n} | {r['flops'] / 1e6:.2f} | {r['numpy_gflops']:.1f} "
            f"| {r['xla_gflops']:.1f} | {r['xla_seconds'] / r['numpy_seconds']:.2f} |"
        )
    lines.append(
        f"\nEpoch: {floor['epoch_flops'] / 1e9:.1f} GFLOP in {floor['steps']:.1f} steps; floor "
        f"{floor['seconds']:.3f} s (numpy only {floor['numpy_seconds']:.3f} s, "
        f"XLA only {floor['xla_seconds']:.3f} s)."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.floor",
        description=__doc__.split("\n\n    python")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--train-samples", type=int, default=TRAIN_SIZE)
    parser.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    parser.add_argument("--budget", type=float, default=0.2, help="seconds of timing per product")
    args = parser.parse_args(argv)
    floor = measure_floor(
        args.batch_size, args.hidden, args.train_samples, args.device, args.budget
    )
    print(markdown(floor))


if __name__ == "__main__":
    main()

"""Where fp32 arithmetic is fast on this CPU: one matmul shape of training, several libraries.

Training on a CPU without fast bf16 is fp32 matmuls (issue #24). torch runs them through MKL;
this prints GFLOP/s of the same shapes through MKL (torch.mm), oneDNN (torch's mkldnn linear)
and numpy's own BLAS, with 1 and all threads, so the machine's real fp32 ceiling is measured
rather than read off a flag, and a library that does better on this CPU shows.

    python benchmarks/fp32_kernels.py [--repeats 7]
"""
from __future__ import annotations

import statistics
import sys
import time

import click

# (rows, inner, outer): a batch of ~2,000 tokens through SmolLM2's MLP (up, down) and attention
# projections, forward and the backward's input gradient (the transposed product)
SHAPES = {"mlp up": (2048, 576, 1536), "mlp down": (2048, 1536, 576), "q/o proj": (2048, 576, 576),
          "square 2048": (2048, 2048, 2048)}


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rates(shape, repeats: int) -> dict[str, float]:
    import numpy as np
    import torch

    rows, inner, outer = shape
    flop = 2 * rows * inner * outer
    a, w = torch.randn(rows, inner), torch.randn(outer, inner)
    out = {"torch.mm (MKL)": flop / timed(lambda: torch.mm(a, w.t()), repeats),
           "F.linear": flop / timed(lambda: torch.nn.functional.linear(a, w), repeats)}
    if torch.backends.mkldnn.is_available():
        a_dnn, w_dnn = a.to_mkldnn(), w.to_mkldnn()
        out["oneDNN linear"] = flop / timed(lambda: torch._C._nn.mkldnn_linear(a_dnn, w_dnn, None), repeats)
    a_np, w_np = a.numpy(), np.ascontiguousarray(w.t().numpy())
    out["numpy"] = flop / timed(lambda: a_np @ w_np, repeats)
    return out


@click.command()
@click.option("--repeats", default=7, show_default=True, help="Timed calls per shape (median).")
def main(repeats):
    import numpy as np
    import torch

    from folio_llm.precision import cpu_type

    blas = next((name for name in ("openblas", "mkl", "blis") if name in str(np.show_config(mode="dicts")).lower()),
                "unknown")
    print(f"{cpu_type()}; torch {torch.__version__}; numpy BLAS: {blas}")
    threads = torch.get_num_threads()
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        for name, shape in SHAPES.items():
            line = "  ".join(f"{lib} {value / 1e9:6.1f}" for lib, value in rates(shape, repeats).items())
            print(f"threads={n} {name:12s} {line}  GFLOP/s", flush=True)
    torch.set_num_threads(threads)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""A design alternative for the convolution, measured against trpo_np's Conv2d: the phase
decomposition (space-to-depth), which needs no im2col copy. Not used by trpo_np: it was slower
in every pass on this machine (bench/README.md, "Atari: Pong in 60 minutes").

Times forward (``apply``), ``backward`` and ``jvp`` of both layers on 256 Pong-shaped states for
the paper CNN's two convolutions (42×42×4 -> 16 channels, 20×20×16 -> 16, kernel 4, stride 2),
each function after warm-up calls (the process's first large allocations fault pages in: a first
timing of the im2col forward pass read 30 ms, 13 ms once warm), medians of 15, and checks
that both layers agree (float32 rounding):

    python bench/conv_phase.py

Writes bench/results/conv-phase.md.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.common import machine, median_time, single_threaded_blas, write_result  # noqa: E402

single_threaded_blas()

import numpy as np  # noqa: E402

from trpo_np.nn import Conv2d  # noqa: E402

BLOCK_BYTES = 1024 * 1024  # input features per block of states, as trpo_np.nn.BLOCK_BYTES


class PhaseConv2d(Conv2d):
    """Valid 2-D convolution (cross-correlation), NHWC, square ``kernel``, ``stride`` >= 1.

    x: (n, H, W, C) -> y: (n, Ho, Wo, O) with Ho = (H - k) // s + 1 and
    ``y[n, p, q] = b + Σ_{i, j, c} x[n, s p + i, s q + j, c] W[(i, j, c)]``; the weight is stored
    as a matrix (k·k·C, O) in (i, j, c) row order.

    **Phase decomposition** (space-to-depth). Write a kernel offset as i = s a + β (tap a < A =
    ⌈k/s⌉, phase β < s): output row p reads input row s (p + a) + β, which is phase β of the s×s
    block row p + a. With the input regrouped into blocks, ``X[(n, P, Q), (β, β', c)] =
    x[n, s P + β, s Q + β', c]`` (Hb × Wb blocks per state), the stride-s convolution becomes a
    stride-1 one with A×A taps on s²·C features::

        y[n, p, q] = b + Σ_{a, a'} X[(n, p + a, q + a')] W_aa',   W_aa'[(β, β', c)] = W[(s a + β, s a' + β', c)]

    (W_aa' is zero where s a + β >= k). In the flattened row index r = (n, P, Q) the tap (a, a')
    reads row r + a·Wb + a', so each tap is one matmul of a contiguous row range of X: no
    im2col copy (an im2col of 4×4 windows copies every input value 4 times at stride 2, and 16
    times at stride 1). The outputs are computed on the whole Hb × Wb grid; rows outside the Ho × Wo
    outputs ("edge rows": their windows wrap into the next row or state) are dropped, and the
    backward pass gives them a zero cotangent. Every pass runs over blocks of a few states
    (``BLOCK_BYTES``) through reused buffers, and the cache of backward and jvp is the input x.
    """

    def __init__(self, in_shape, channels: int, kernel: int, stride: int = 1):
        super().__init__(in_shape, channels, kernel, stride)
        k, s = self.kernel, self.stride
        self.taps = -(-k // s)  # A: taps per axis
        self.grid = (self.out_hw[0] + self.taps - 1, self.out_hw[1] + self.taps - 1)  # Hb × Wb blocks per state
        self.features = s * s * self.in_shape[2]  # columns of X
        self.tap_rows = [a * self.grid[1] + b for a in range(self.taps) for b in range(self.taps)]
        self.halo = self.tap_rows[-1]  # the last tap reads this many rows past its output row

    # -- the phase layout and its adjoint ---------------------------------------------------------
    def tap_weights(self, Wm):
        """W (k·k·C, O) -> (A·A, s²·C, O): the tap matrices W_aa', zero past the kernel."""
        k, s, A, O = self.kernel, self.stride, self.taps, self.channels
        Wp = np.zeros((A * s, A * s, self.in_shape[2], O), dtype=Wm.dtype)
        Wp[:k, :k] = Wm.reshape(k, k, -1, O)
        return Wp.reshape(A, s, A, s, -1, O).transpose(0, 2, 1, 3, 4, 5).reshape(A * A, self.features, O)

    def tap_weights_adjoint(self, dWt, dW):
        """dW (k·k·C, O) = the adjoint of :meth:`tap_weights` applied to dWt (A·A, s²·C, O)."""
        k, s, A, O = self.kernel, self.stride, self.taps, self.channels
        dWp = dWt.reshape(A, A, s, s, -1, O).transpose(0, 2, 1, 3, 4, 5).reshape(A * s, A * s, -1, O)
        dW[...] = dWp[:k, :k].reshape(dW.shape)

    def block_view(self, x):
        """(m, H, W, C) -> the view (m, Hb, s, Wb, s, C) of the rows and columns the blocks cover,
        or, when the last block row or column reaches past the input (only zero taps read
        there; possible when s does not divide k), of a zero-padded copy."""
        (Hb, Wb), s = self.grid, self.stride
        if s * Hb > x.shape[1] or s * Wb > x.shape[2]:
            xp = np.zeros((x.shape[0], s * Hb, s * Wb, x.shape[3]), dtype=x.dtype)
            h, w = min(s * Hb, x.shape[1]), min(s * Wb, x.shape[2])
            xp[:, :h, :w] = x[:, :h, :w]
            x = xp
        return x[:, :s * Hb, :s * Wb].reshape(x.shape[0], Hb, s, Wb, s, x.shape[3])

    def blocks(self, *xs):
        """(i, j, X) over blocks of states: X (m·Hb·Wb, s²·C·len(xs)) holds the phase matrices of
        xs[0][i:j], xs[1][i:j], ... side by side; a view of one buffer, overwritten by the next block."""
        (Hb, Wb), s, C = self.grid, self.stride, self.in_shape[2]
        n, dtype = xs[0].shape[0], np.result_type(*xs)
        m = max(1, min(n, BLOCK_BYTES // (Hb * Wb * self.features * len(xs) * dtype.itemsize)))  # states per block
        buf = np.empty((m, Hb, Wb, len(xs), s, s, C), dtype=dtype)
        for i in range(0, n, m):
            j = min(i + m, n)
            for t, x in enumerate(xs):
                np.copyto(buf[:j - i, :, :, t].transpose(0, 1, 3, 2, 4, 5), self.block_view(x[i:j]))
            yield i, j, buf[:j - i].reshape((j - i) * Hb * Wb, -1)

    def phases_adjoint(self, dX, dx):
        """dx[...] = the adjoint of the phase layout applied to dX (m·Hb·Wb, s²·C); dx: (m, H, W, C)."""
        (Hb, Wb), s, C = self.grid, self.stride, self.in_shape[2]
        m = dx.shape[0]
        blocks = dX.reshape(m, Hb, Wb, s, s, C).transpose(0, 1, 3, 2, 4, 5)  # (m, Hb, s, Wb, s, C)
        h, w = min(s * Hb, dx.shape[1]), min(s * Wb, dx.shape[2])
        if (h, w) == (s * Hb, s * Wb):
            np.copyto(dx[:, :h, :w].reshape(m, Hb, s, Wb, s, C), blocks)
        else:  # past the input's edge only zero taps read, so their cotangent is dropped
            dx[:, :h, :w] = blocks.reshape(m, s * Hb, s * Wb, C)[:, :h, :w]

    def convolve(self, X, Wt, out, tmp):
        """out[:L] = Σ_t X[r_t : r_t + L] Wt[t], L = len(X) − halo: the stride-1 convolution on the
        block grid (rows past L and edge rows hold no output)."""
        L = len(X) - self.halo
        np.matmul(X[:L], Wt[0], out=out[:L])
        for r, Wk in zip(self.tap_rows[1:], Wt[1:]):
            out[:L] += np.matmul(X[r:r + L], Wk, out=tmp[:L])
        return out

    def outputs(self, G, m):
        """The Ho × Wo outputs of the grid rows G (m·Hb·Wb, O): a view (m, Ho, Wo, O)."""
        (Hb, Wb), (Ho, Wo) = self.grid, self.out_hw
        return G.reshape(m, Hb, Wb, -1)[:, :Ho, :Wo]

    # -- the passes ---------------------------------------------------------------------------------
    def apply(self, x, w, inplace=False):
        Wm, b = w
        Wt = self.tap_weights(Wm)
        y = np.empty((x.shape[0],) + self.out_shape, dtype=np.result_type(x, Wm))
        G = tmp = None
        for i, j, X in self.blocks(x):
            if G is None:
                G, tmp = np.empty((2, len(X), self.channels), dtype=y.dtype)
            self.convolve(X, Wt, G, tmp)
            np.add(self.outputs(G[:len(X)], j - i), b, out=y[i:j])
        return y

    def forward(self, x, w):
        return self.apply(x, w), x

    def backward(self, dy, x, w, dw, need_dx=True):
        Wm, _ = w
        Wt = self.tap_weights(Wm)
        dWt = np.zeros_like(Wt)
        dw[1][...] = 0.0
        dx = np.zeros(x.shape, dtype=dy.dtype) if need_dx else None
        dG = None
        for i, j, X in self.blocks(x):
            M, L = len(X), len(X) - self.halo
            if dG is None:  # the grid's cotangent: zero on the edge rows, which no block writes
                dG, ones = np.zeros((M, self.channels), dtype=dy.dtype), np.ones(M, dtype=dy.dtype)
                dWk, dbk, dX, tmp = np.empty_like(Wt[0]), np.empty_like(dw[1]), np.empty_like(X), np.empty_like(X)
            dGb = dG[:M]
            self.outputs(dGb, j - i)[...] = dy[i:j]
            for t, r in enumerate(self.tap_rows):
                dWt[t] += np.matmul(X[r:r + L].T, dGb[:L], out=dWk)  # dW_aa' = Σ_r X[r + r_t]ᵀ dY[r]
            dw[1] += np.matmul(ones[:M], dGb, out=dbk)  # db = Σ dY: a GEMV (np.sum(axis=0) is slower)
            if need_dx:  # dX[r + r_t] += dY[r] W_aa'ᵀ, then back from phases to pixels
                dXb = dX[:M]
                dXb[L:] = 0.0
                np.matmul(dGb[:L], Wt[0].T, out=dXb[:L])
                for r, Wk in zip(self.tap_rows[1:], Wt[1:]):
                    dXb[r:r + L] += np.matmul(dGb[:L], Wk.T, out=tmp[:L])
                self.phases_adjoint(dXb, dx[i:j])
        self.tap_weights_adjoint(dWt, dw[0])
        return dx

    def jvp(self, rx, x, w, rw):
        Wm, _ = w
        rW, rb = rw
        # R{y} = conv(x; R{W}) + conv(R{x}; W) + R{b}: X and R{X} side by side, one matmul per tap
        Wt = self.tap_weights(rW)
        if rx is not None:
            Wt = np.concatenate([Wt, self.tap_weights(Wm)], axis=1)
        ry = np.empty((x.shape[0],) + self.out_shape, dtype=np.result_type(x, rW))
        G = tmp = None
        for i, j, X in self.blocks(*((x,) if rx is None else (x, rx))):
            if G is None:
                G, tmp = np.empty((2, len(X), self.channels), dtype=ry.dtype)
            self.convolve(X, Wt, G, tmp)
            np.add(self.outputs(G[:len(X)], j - i), rb, out=ry[i:j])
        return ry


def main():
    rng, n = np.random.default_rng(0), 256
    lines = ["# Convolution: im2col blocks (trpo_np.nn.Conv2d) against the phase decomposition", "",
             f"{machine()}. Command: `python bench/conv_phase.py`. 256 states, float32, one thread; medians of 15 "
             "calls after warm-up calls, in milliseconds. backward computes dx except for the first layer "
             "(as in the networks); jvp has R{x} except for the first layer.", "",
             "| layer | pass | im2col blocks (ms) | phase decomposition (ms) | phase / im2col | max relative difference |",
             "|---|---|---|---|---|---|"]
    for shape in [(42, 42, 4), (20, 20, 16)]:
        first = shape[2] == 4
        x = rng.standard_normal((n,) + shape).astype(np.float32)
        layers = [Conv2d(shape, 16, 4, 2), PhaseConv2d(shape, 16, 4, 2)]
        W = rng.standard_normal(layers[0].param_shapes[0]).astype(np.float32)
        w = [W, np.ones(16, np.float32)]
        dy = np.cos(np.arange(n * int(np.prod(layers[0].out_shape)), dtype=np.float32)).reshape((n,) + layers[0].out_shape)
        rx = None if first else np.sin(x)
        passes = {"forward": lambda c: c.apply(x, w),
                  "backward": lambda c: (c.backward(dy, x, w, dw := [np.empty_like(W), np.empty(16, np.float32)],
                                                    need_dx=not first), dw[0].copy()),
                  "jvp": lambda c: c.jvp(rx, x, w, w)}
        for c in layers:  # every pass once before any timing: the process's first large allocations fault pages
            for fn in passes.values():
                fn(c)
        for name, fn in passes.items():
            t = [1e3 * median_time(lambda c=c: fn(c), 15) for c in layers]
            a, b = fn(layers[0]), fn(layers[1])
            a, b = (a if name != "backward" else a[1]), (b if name != "backward" else b[1])
            diff = float(np.abs(a - b).max() / np.abs(a).max())
            lines.append(f"| {shape} | {name} | {t[0]:.1f} | {t[1]:.1f} | {t[1] / t[0]:.2f} | {diff:.1e} |")
            print(lines[-1], flush=True)
    write_result("conv-phase.md", lines)


if __name__ == "__main__":
    main()

"""Layers and networks with reverse-mode (backprop) and forward-mode (R-operator) derivatives.

Every layer maps a batch ``x`` to ``y = f(x; w)`` and offers three passes:

- ``forward(x, w) -> (y, cache)``
- ``backward(dy, cache, w, dw) -> dx``: the vector-Jacobian product. Parameter cotangents
  ``dL/dw`` are written into the views ``dw``; the input cotangent is returned.
- ``jvp(rx, cache, w, rw) -> ry``: the Jacobian-vector product ``R{y} = ∂y/∂x R{x} + ∂y/∂w R{w}``
  (Pearlmutter's R-operator). ``rx = None`` means the input is data (``R{x} = 0``).

Forward-mode rules, next to each layer:  dense ``R{y} = R{x} W + x R{W} + R{b}``;
tanh ``R{h} = (1 - h²) ⊙ R{z}``; ReLU ``R{h} = 1[z > 0] ⊙ R{z}``; conv via im2col
``R{Y} = im2col(R{x}) W + cols R{W} + R{b}``, with ``cols`` rebuilt block by block from the
cached input (see :class:`Conv2d`).

A :class:`Sequential` keeps all parameters in one flat vector ``theta``; its layout gives
per-layer views of *any* flat vector of that size, so ``theta``, a gradient ``g``, a CG
direction ``v`` and ``F v`` share one indexing. Caches are explicit values, not layer state,
so a Fisher-vector product can keep the forward cache at θ_old while other passes run.

Image layout is NHWC (batch, height, width, channels), the layout of Atari frame stacks.

References:
    Pearlmutter (1994), Fast exact multiplication by the Hessian.
    Schraudolph (2002), Fast curvature matrix-vector products for second-order gradient descent.
    Saxe et al. (2014), Exact solutions to the nonlinear dynamics of learning (orthogonal init).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class ShapeError(ValueError):
    """Input of the wrong shape or dtype for a layer or network."""


class Layer:
    """Base class. ``param_shapes`` is known at construction, so the flat layout is too."""

    param_shapes: tuple[tuple[int, ...], ...] = ()

    def __init__(self, in_shape: tuple[int, ...]):
        self.in_shape = tuple(int(d) for d in in_shape)
        self.out_shape = self.in_shape

    def init_params(self, w: list[np.ndarray], rng: np.random.Generator) -> None:
        """Fill the parameter views ``w`` in place (no-op for parameter-free layers)."""

    def apply(self, x: np.ndarray, w, inplace: bool = False) -> np.ndarray:
        """``y`` alone, with no cache for the derivative passes (predictions, line search).
        ``inplace``: ``x`` is a temporary of the network that may be overwritten."""
        return self.forward(x, w)[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(in={self.in_shape}, out={self.out_shape})"


def orthogonal(shape: tuple[int, int], gain: float, rng: np.random.Generator) -> np.ndarray:
    """Orthogonal matrix of ``shape`` scaled by ``gain`` (Saxe et al. 2014): QR of a Gaussian."""
    rows, cols = shape
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))  # make the decomposition unique, so the law is uniform
    if rows < cols:
        q = q.T
    return gain * q[:rows, :cols]


class Dense(Layer):
    """``y = x W + b``; x: (n, i), W: (i, o), b: (o,). Orthogonal init with ``gain``, b = 0."""

    def __init__(self, in_shape, units: int, gain: float = math.sqrt(2.0)):
        super().__init__(in_shape)
        if len(self.in_shape) != 1:
            raise ShapeError(f"Dense expects 1-D features per sample, got in_shape={self.in_shape}")
        self.units, self.gain = int(units), float(gain)
        self.out_shape = (self.units,)
        self.param_shapes = ((self.in_shape[0], self.units), (self.units,))

    def init_params(self, w, rng):
        w[0][...] = orthogonal(self.param_shapes[0], self.gain, rng)
        w[1][...] = 0.0

    def forward(self, x, w):
        return self.apply(x, w), x

    def apply(self, x, w, inplace=False):
        W, b = w
        y = x @ W
        y += b
        return y

    def backward(self, dy, x, w, dw, need_dx=True):
        W, _ = w
        np.matmul(x.T, dy, out=dw[0])  # dW = xᵀ dy
        np.sum(dy, axis=0, out=dw[1])  # db = Σ_n dy
        return dy @ W.T if need_dx else None  # dx = dy Wᵀ

    def jvp(self, rx, x, w, rw):
        W, _ = w
        rW, rb = rw
        ry = x @ rW + rb  # x R{W} + R{b}
        if rx is not None:
            ry += rx @ W  # + R{x} W
        return ry


class Tanh(Layer):
    """``h = tanh(z)``; dh/dz = 1 - h²."""

    def forward(self, x, w):
        h = np.tanh(x)
        return h, h

    def apply(self, x, w, inplace=False):
        return np.tanh(x, out=x if inplace else None)

    def backward(self, dy, h, w, dw, need_dx=True):
        return dy * (1.0 - h * h)

    def jvp(self, rx, h, w, rw):
        return None if rx is None else (1.0 - h * h) * rx  # R{h} = (1 - h²) ⊙ R{z}


class ReLU(Layer):
    """``h = max(z, 0)``; the derivative at 0 is taken as 0."""

    def forward(self, x, w):
        mask = x > 0
        return x * mask, mask

    def apply(self, x, w, inplace=False):
        return np.maximum(x, 0, out=x if inplace else None)

    def backward(self, dy, mask, w, dw, need_dx=True):
        return dy * mask

    def jvp(self, rx, mask, w, rw):
        return None if rx is None else rx * mask  # R{h} = 1[z > 0] ⊙ R{z}


class Flatten(Layer):
    """(n, h, w, c) -> (n, h*w*c), C order."""

    def __init__(self, in_shape):
        super().__init__(in_shape)
        self.out_shape = (int(np.prod(self.in_shape)),)

    def forward(self, x, w):
        return x.reshape(x.shape[0], -1), None

    def backward(self, dy, cache, w, dw, need_dx=True):
        return dy.reshape((dy.shape[0],) + self.in_shape)

    def jvp(self, rx, cache, w, rw):
        return None if rx is None else rx.reshape(rx.shape[0], -1)


# Bytes of im2col columns per block of states in Conv2d's passes. Materializing a whole chunk's
# columns (100 kB per 42×42×4 state for the first Atari layer) made every pass memory-bound;
# blocks keep them in the cache (measured on a 2-core EPYC, 512 KiB L2 per core, paper CNN): the
# forward pass of 256 states went from 191 to 84 µs per state, and a 5,000-step Pong update
# (CPU time, medians of 3) took 4.18 s with 256 KiB blocks and 3.6-3.8 s with 1 MiB (fewer
# Python steps per pass in backward; 512 KiB and 2 MiB within the noise of 1 MiB).
BLOCK_BYTES = 1024 * 1024


class Conv2d(Layer):
    """Valid 2-D convolution (cross-correlation), NHWC, square ``kernel``, ``stride`` >= 1.

    x: (n, H, W, C) -> y: (n, Ho, Wo, O) with Ho = (H - k) // s + 1. The weight is stored as a
    matrix (k·k·C, O) in (i, j, c) row order, so that im2col turns the convolution into one
    matmul: ``Y = cols W + b`` with ``cols[(n, p, q), (i, j, c)] = x[n, s p + i, s q + j, c]``.
    The (i, j, c) order keeps each window row (j, c) contiguous in NHWC memory, which makes the
    im2col copy about 2.5x faster than sliding_window_view's native (c, i, j) order.

    Every pass runs over blocks of a few states (:data:`BLOCK_BYTES` of columns) through one
    reused buffer, so the columns never leave the cache. The cache of the derivative passes is
    the input ``x`` itself (a reference, 4x smaller than its columns); backward and jvp rebuild the
    columns block by block, which costs less than reading a stored copy back from memory.
    """

    def __init__(self, in_shape, channels: int, kernel: int, stride: int = 1,
                 gain: float = math.sqrt(2.0)):
        super().__init__(in_shape)
        if len(self.in_shape) != 3:
            raise ShapeError(f"Conv2d expects (H, W, C) inputs, got in_shape={self.in_shape}")
        H, W, C = self.in_shape
        self.channels, self.kernel, self.stride, self.gain = int(channels), int(kernel), int(stride), gain
        if self.stride < 1 or self.kernel < 1 or self.kernel > min(H, W):
            raise ShapeError(f"Conv2d: bad kernel={kernel} / stride={stride} for input {self.in_shape}")
        self.out_hw = ((H - self.kernel) // self.stride + 1, (W - self.kernel) // self.stride + 1)
        self.out_shape = self.out_hw + (self.channels,)
        self.param_shapes = ((self.kernel * self.kernel * C, self.channels), (self.channels,))

    def init_params(self, w, rng):
        w[0][...] = orthogonal(self.param_shapes[0], self.gain, rng)
        w[1][...] = 0.0

    def windows(self, x):
        """(n, H, W, C) -> the view (n, Ho, Wo, k, k, C) of every window: no copy."""
        k, s = self.kernel, self.stride
        win = sliding_window_view(x, (k, k), axis=(1, 2))[:, ::s, ::s]  # (n, Ho, Wo, C, k, k)
        return win.transpose(0, 1, 2, 4, 5, 3)

    def im2col(self, x):
        """(n, H, W, C) -> (n·Ho·Wo, k·k·C), a copy."""
        return self.windows(x).reshape(x.shape[0] * self.out_hw[0] * self.out_hw[1], -1)

    def blocks(self, x):
        """(i, j, cols of states i:j) over ``x`` in blocks of :data:`BLOCK_BYTES`; the columns
        are a view of one buffer, overwritten by the next block."""
        n, P = x.shape[0], self.out_hw[0] * self.out_hw[1]
        K = self.param_shapes[0][0]
        m = max(1, min(n, BLOCK_BYTES // (P * K * x.itemsize)))  # states per block
        buf = np.empty((m,) + self.out_hw + (self.kernel, self.kernel, x.shape[3]), dtype=x.dtype)
        win = self.windows(x)
        for i in range(0, n, m):
            j = min(i + m, n)
            np.copyto(buf[:j - i], win[i:j])
            yield i, j, buf[:j - i].reshape((j - i) * P, K)

    def col2im_add(self, dcols, dx):
        """dx += the adjoint of im2col applied to ``dcols`` (m·Ho·Wo, k·k·C); dx: (m, H, W, C)."""
        k, s = self.kernel, self.stride
        Ho, Wo = self.out_hw
        d = dcols.reshape(dx.shape[0], Ho, Wo, k, k, dx.shape[3])
        for i in range(k):  # loops over the kernel window only (k² slices), vectorized over n, p, q, c
            for j in range(k):
                view = dx[:, i:i + s * Ho:s, j:j + s * Wo:s, :]
                np.add(view, d[:, :, :, i, j, :], out=view)

    def input_grad(self, dy2, Wm, dx):
        """dx = ∂⟨dY, conv(x)⟩/∂x for dY (m·Ho·Wo, O) into zeros dx (m, H, W, C): col2im(dY Wᵀ).

        When the stride divides the kernel (k = A·s, the Atari networks), this is itself a
        stride-1 convolution, computed as one matmul: on the input viewed as s×s blocks
        (block row P, phase b: row s·P + b), kernel offset i = s·a + b of output row p = P − a
        lands on block row P, so dX[P, Q, (b, b', c)] = Σ_{a, a', o} dY[P − a, Q − a', o]
        W[(s a + b, s a' + b', c), o]: the A×A windows of dY zero-padded by A − 1, times W with
        a and a' reversed. It moves a quarter of the data of dY Wᵀ and its k² scatter-adds."""
        k, s = self.kernel, self.stride
        if k % s or s == 1:
            self.col2im_add(dy2 @ Wm.T, dx)
            return
        A, (Ho, Wo), O = k // s, self.out_hw, self.channels
        m, C = dx.shape[0], dx.shape[3]
        Hb, Wb = Ho + A - 1, Wo + A - 1  # block rows and columns some window covers
        pad = np.zeros((m, Ho + 2 * (A - 1), Wo + 2 * (A - 1), O), dtype=dy2.dtype)
        pad[:, A - 1:A - 1 + Ho, A - 1:A - 1 + Wo] = dy2.reshape(m, Ho, Wo, O)
        cols = sliding_window_view(pad, (A, A), axis=(1, 2)).transpose(0, 1, 2, 4, 5, 3).reshape(m * Hb * Wb, -1)
        Wt = Wm.reshape(A, s, A, s, C, O)[::-1, :, ::-1].transpose(0, 2, 5, 1, 3, 4).reshape(A * A * O, s * s * C)
        dxb = (cols @ Wt).reshape(m, Hb, Wb, s, s, C)
        dx[:, :s * Hb, :s * Wb] = dxb.transpose(0, 1, 3, 2, 4, 5).reshape(m, s * Hb, s * Wb, C)

    def apply(self, x, w, inplace=False):
        Wm, b = w
        P = self.out_hw[0] * self.out_hw[1]
        y = np.empty((x.shape[0] * P, self.channels), dtype=np.result_type(x, Wm))
        for i, j, cols in self.blocks(x):
            yb = np.matmul(cols, Wm, out=y[i * P:j * P])
            yb += b  # while the block is in the cache
        return y.reshape((x.shape[0],) + self.out_shape)

    def forward(self, x, w):
        return self.apply(x, w), x

    def backward(self, dy, x, w, dw, need_dx=True):
        Wm, _ = w
        P = self.out_hw[0] * self.out_hw[1]
        dy2 = dy.reshape(-1, self.channels)
        dw[0][...] = 0.0
        dw[1][...] = 0.0
        dwi, dbi = np.empty_like(dw[0]), np.empty_like(dw[1])
        ones = None
        dx = np.zeros(x.shape, dtype=dy.dtype) if need_dx else None
        for i, j, cols in self.blocks(x):
            dyb = dy2[i * P:j * P]
            dw[0] += np.matmul(cols.T, dyb, out=dwi)  # dW = colsᵀ dY, summed over the blocks
            if ones is None:
                ones = np.ones(len(dyb), dtype=dy.dtype)
            dw[1] += np.matmul(ones[:len(dyb)], dyb, out=dbi)  # db = Σ dY: a GEMV, 5x np.sum(axis=0)
            if need_dx:
                self.input_grad(dyb, Wm, dx[i:j])  # dx = col2im(dY Wᵀ)
        return dx

    def jvp(self, rx, x, w, rw):
        Wm, _ = w
        rW, rb = rw
        P = self.out_hw[0] * self.out_hw[1]
        ry = np.empty((x.shape[0] * P, self.channels), dtype=np.result_type(x, rW))
        rblocks = self.blocks(rx) if rx is not None else None
        tmp = None
        for i, j, cols in self.blocks(x):  # block by block, so that R{y}'s block stays in the cache
            ryb = np.matmul(cols, rW, out=ry[i * P:j * P])  # cols R{W}
            if rblocks is not None:
                _, _, rcols = next(rblocks)
                tmp = np.empty_like(ryb) if tmp is None else tmp
                ryb += np.matmul(rcols, Wm, out=tmp[:len(ryb)])  # + im2col(R{x}) W
            ryb += rb  # + R{b}
        return ry.reshape((-1,) + self.out_shape)


class Sequential:
    """A stack of layers whose parameters live in one flat vector ``theta``.

    ``views(vec)`` slices any flat vector of ``size`` into per-layer lists of arrays shaped like
    the parameters; ``self.w`` are the views of ``self.theta``, so updating ``theta`` in place
    updates every layer.
    """

    def __init__(self, layers: list[Layer], dtype=np.float64):
        self.layers = layers
        self.dtype = np.dtype(dtype)
        if not np.issubdtype(self.dtype, np.floating):
            raise TypeError(f"network dtype must be floating, got {self.dtype}")
        for a, b in zip(layers, layers[1:]):
            if a.out_shape != b.in_shape:
                raise ShapeError(f"{a!r} outputs {a.out_shape} but {b!r} expects {b.in_shape}")
        self.in_shape, self.out_shape = layers[0].in_shape, layers[-1].out_shape
        self.offsets = []  # per layer: list of (start, stop, shape)
        n = 0
        for layer in layers:
            blocks = []
            for shape in layer.param_shapes:
                size = int(np.prod(shape))
                blocks.append((n, n + size, shape))
                n += size
            self.offsets.append(blocks)
        self.size = n
        self.bind(np.zeros(n, dtype=self.dtype))

    def bind(self, theta: np.ndarray) -> None:
        """Use ``theta`` (a flat array of ``size``, e.g. a slice of a policy's vector) as storage."""
        if theta.dtype != self.dtype:
            raise ShapeError(f"parameter vector dtype {theta.dtype} differs from the network's {self.dtype}")
        self.theta = theta
        self.w = self.views(theta)

    def views(self, vec: np.ndarray) -> list[list[np.ndarray]]:
        if vec.shape != (self.size,):
            raise ShapeError(f"flat vector has shape {vec.shape}, network has {self.size} parameters")
        return [[vec[a:b].reshape(shape) for a, b, shape in blocks] for blocks in self.offsets]

    def init(self, rng: np.random.Generator) -> "Sequential":
        for layer, w in zip(self.layers, self.w):
            layer.init_params(w, rng)
        return self

    def check_input(self, x: np.ndarray) -> None:
        if not isinstance(x, np.ndarray) or x.ndim != len(self.in_shape) + 1 or x.shape[1:] != self.in_shape:
            shape = getattr(x, "shape", type(x).__name__)
            raise ShapeError(f"{self.layers[0]!r}: input has shape {shape}, expected (batch,) + {self.in_shape}")
        if x.dtype != self.dtype:
            raise ShapeError(f"{self.layers[0]!r}: input dtype {x.dtype} differs from the network's {self.dtype}; "
                             f"cast it first (x.astype({self.dtype.name}))")

    def forward(self, x: np.ndarray):
        """x: (n,) + in_shape -> (y: (n,) + out_shape, caches)."""
        self.check_input(x)
        caches = []
        for layer, w in zip(self.layers, self.w):
            x, cache = layer.forward(x, w)
            caches.append(cache)
        return x, caches

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The output alone: each layer's ``apply``, no caches, temporaries overwritten in place."""
        self.check_input(x)
        for i, (layer, w) in enumerate(zip(self.layers, self.w)):
            x = layer.apply(x, w, inplace=i > 0)
        return x

    def backward(self, dy: np.ndarray, caches, out: np.ndarray | None = None) -> np.ndarray:
        """Vector-Jacobian product: cotangent of the output (n,)+out_shape -> flat dθ (size,)."""
        grad = np.zeros(self.size, dtype=self.dtype) if out is None else out
        dws = self.views(grad)
        for i in range(len(self.layers) - 1, -1, -1):
            dy = self.layers[i].backward(dy, caches[i], self.w[i], dws[i], need_dx=i > 0)
        return grad

    def jvp(self, v: np.ndarray, caches) -> np.ndarray:
        """Jacobian-vector product in parameter space: flat v (size,) -> R{y}, (n,)+out_shape."""
        rws = self.views(v.astype(self.dtype, copy=False))
        r = None  # the input is data: R{x} = 0
        for layer, cache, w, rw in zip(self.layers, caches, self.w, rws):
            r = layer.jvp(r, cache, w, rw)
        return r


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, activation: str = "tanh",
        out_gain: float = 1.0, dtype=np.float64) -> Sequential:
    """Dense-activation stack. Hidden layers: orthogonal init, gain √2; output layer: ``out_gain``
    (0.01 for a policy mean so the initial policy is nearly state-independent, 1 for a value)."""
    act = {"tanh": Tanh, "relu": ReLU}.get(activation)
    if act is None:
        raise ValueError(f"unknown activation {activation!r}; choose 'tanh' or 'relu'")
    layers, shape = [], (int(in_dim),)
    for h in hidden:
        layers.append(Dense(shape, h))
        layers.append(act(layers[-1].out_shape))
        shape = layers[-1].out_shape
    layers.append(Dense(shape, out_dim, gain=out_gain))
    return Sequential(layers, dtype)


def atari_cnn(in_shape: tuple[int, int, int], out_dim: int, kind: str = "paper",
              out_gain: float = 1.0, dtype=np.float32) -> Sequential:
    """Convolutional networks for stacked frames (NHWC).

    ``paper``: the TRPO paper's policy (Sec. 8.2): two conv layers of 16 channels, stride 2
    (4×4 kernels here), then 20 fully connected units, ReLU activations. On 42×42×4 inputs this
    has about 31k parameters, close to the paper's "33,500".
    ``nature``: the Nature-DQN torso (Mnih et al. 2015): 32 8×8/4, 64 4×4/2, 64 3×3/1, 512 units.
    """
    if kind == "paper":
        spec, fc = [(16, 4, 2), (16, 4, 2)], 20
    elif kind == "nature":
        spec, fc = [(32, 8, 4), (64, 4, 2), (64, 3, 1)], 512
    else:
        raise ValueError(f"unknown CNN kind {kind!r}; choose 'paper' or 'nature'")
    layers, shape = [], tuple(in_shape)
    for channels, kernel, stride in spec:
        layers.append(Conv2d(shape, channels, kernel, stride))
        layers.append(ReLU(layers[-1].out_shape))
        shape = layers[-1].out_shape
    layers.append(Flatten(shape))
    layers.append(Dense(layers[-1].out_shape, fc))
    layers.append(ReLU(layers[-1].out_shape))
    layers.append(Dense(layers[-1].out_shape, out_dim, gain=out_gain))
    return Sequential(layers, dtype)

"""Layers and networks: backward and jvp against central differences, conv against a naive loop."""

import numpy as np
import pytest

from tests.gradcheck import numerical_grad, numerical_jvp, rel_error
from trpo_np.nn import Conv2d, Dense, Flatten, ReLU, Sequential, ShapeError, Tanh, atari_cnn, mlp


def make_layer(kind):
    """A layer with non-square shapes and an input batch away from ReLU kinks."""
    rng = np.random.default_rng(1)
    if kind == "dense":
        layer, x = Dense((5,), 7), rng.standard_normal((4, 5))
    elif kind == "tanh":
        layer, x = Tanh((6,)), rng.standard_normal((3, 6))
    elif kind == "relu":
        layer = ReLU((6,))
        x = rng.standard_normal((3, 6))
        x += 0.1 * np.sign(x)  # keep inputs away from the kink at 0
    elif kind == "flatten":
        layer, x = Flatten((3, 4, 2)), rng.standard_normal((2, 3, 4, 2))
    elif kind == "conv":
        layer, x = Conv2d((7, 6, 3), 5, kernel=3, stride=2), rng.standard_normal((2, 7, 6, 3))
    elif kind == "conv_k4s2":  # stride divides the kernel (the Atari case); row 8 is in no window
        layer, x = Conv2d((9, 8, 2), 3, kernel=4, stride=2), rng.standard_normal((2, 9, 8, 2))
    elif kind == "conv_s1":
        layer, x = Conv2d((5, 6, 2), 3, kernel=2, stride=1), rng.standard_normal((3, 5, 6, 2))
    net = Sequential([layer], np.float64).init(rng)
    net.theta += 0.1 * rng.standard_normal(net.size)  # nonzero biases too
    return net, x


LAYERS = ["dense", "tanh", "relu", "flatten", "conv", "conv_k4s2", "conv_s1"]


def first_layer_backward(net, x, dy):
    """Input and parameter cotangents of a one-layer net (need_dx forced on)."""
    y, caches = net.forward(x)
    grad = np.zeros(net.size)
    layer = net.layers[0]
    dx = layer.backward(dy, caches[0], net.w[0], net.views(grad)[0], need_dx=True)
    return dx, grad


@pytest.mark.parametrize("kind", LAYERS)
def test_layer_backward_matches_central_differences(kind):
    net, x = make_layer(kind)
    y = net(x)
    dy = np.random.default_rng(2).standard_normal(y.shape)
    dx, grad = first_layer_backward(net, x, dy)
    loss = lambda _: float(np.sum(net(x) * dy))
    assert rel_error(dx, numerical_grad(lambda xx: float(np.sum(net(xx) * dy)), x.copy())) < 1e-6
    if net.size:
        num = numerical_grad(loss, net.theta)
        # every parameter block separately (dW and db)
        for a, b in zip(net.views(grad)[0], net.views(num)[0]):
            assert rel_error(a, b) < 1e-6


@pytest.mark.parametrize("kind", LAYERS)
def test_layer_jvp_matches_central_difference(kind):
    net, x = make_layer(kind)
    rng = np.random.default_rng(3)
    rx, v = rng.standard_normal(x.shape), rng.standard_normal(net.size)
    _, caches = net.forward(x)
    layer = net.layers[0]
    ry = layer.jvp(rx, caches[0], net.w[0], net.views(v)[0])
    theta0 = net.theta.copy()

    def f(z):  # z = (x, θ) stacked flat
        net.theta[:] = z[x.size:]
        out = net(z[:x.size].reshape(x.shape))
        net.theta[:] = theta0
        return out

    z, dz = np.concatenate([x.ravel(), theta0]), np.concatenate([rx.ravel(), v])
    assert rel_error(ry, numerical_jvp(f, z, dz)) < 1e-6


def naive_conv(x, W, b, k, s):
    """Direct loop definition of the NHWC valid cross-correlation, weight in (i, j, c) row order."""
    n, H, Wd, C = x.shape
    O = W.shape[1]
    Wk = W.reshape(k, k, C, O)
    Ho, Wo = (H - k) // s + 1, (Wd - k) // s + 1
    y = np.zeros((n, Ho, Wo, O))
    for b_ in range(n):
        for p in range(Ho):
            for q in range(Wo):
                for o in range(O):
                    acc = b[o]
                    for c in range(C):
                        for i in range(k):
                            for j in range(k):
                                acc += x[b_, s * p + i, s * q + j, c] * Wk[i, j, c, o]
                    y[b_, p, q, o] = acc
    return y


@pytest.mark.parametrize("shape,ch,k,s", [((7, 6, 3), 5, 3, 2), ((9, 8, 2), 4, 4, 2), ((5, 5, 1), 2, 2, 1)])
def test_conv_matches_naive_loops(shape, ch, k, s, rng):
    net = Sequential([Conv2d(shape, ch, k, s)], np.float64).init(rng)
    net.w[0][1][...] = rng.standard_normal(ch)
    x = rng.standard_normal((2,) + shape)
    assert rel_error(net(x), naive_conv(x, net.w[0][0], net.w[0][1], k, s)) < 1e-12


def test_network_backward_and_jvp_adjoint_identity(rng):
    """⟨w, J v⟩ = ⟨Jᵀ w, v⟩ for a whole CNN, to round-off."""
    net = atari_cnn((12, 12, 2), 3, dtype=np.float64).init(rng)
    x = rng.standard_normal((3, 12, 12, 2))
    y, caches = net.forward(x)
    w, v = rng.standard_normal(y.shape), rng.standard_normal(net.size)
    assert abs(np.sum(w * net.jvp(v, caches)) - np.dot(net.backward(w, caches), v)) < 1e-10 * np.abs(v).sum()


def output_at(net, x):
    """θ ↦ net(x) at parameters θ, leaving the network's θ as it was."""
    theta0 = net.theta.copy()

    def f(t):
        net.theta[:] = t
        out = net(x)
        net.theta[:] = theta0
        return out
    return f


def test_mlp_gradient_and_jvp_against_central_differences(rng):
    net = mlp(4, (6, 5), 3, dtype=np.float64).init(rng)
    x = rng.standard_normal((5, 4))
    y, caches = net.forward(x)
    dy, v = rng.standard_normal(y.shape), rng.standard_normal(net.size)
    assert rel_error(net.backward(dy, caches), numerical_grad(lambda t: float(np.sum(net(x) * dy)), net.theta)) < 1e-6
    assert rel_error(net.jvp(v, caches), numerical_jvp(output_at(net, x), net.theta.copy(), v)) < 1e-6


@pytest.mark.parametrize("kind,shape", [("paper", (10, 10, 2)), ("nature", (36, 36, 2))])
def test_atari_value_network_gradient_and_jvp(kind, shape):
    """The full Atari torso with a scalar head (the value network) at a small input size."""
    rng = np.random.default_rng(11)
    net = atari_cnn(shape, 1, kind, dtype=np.float64).init(rng)
    net.theta += 0.05 * rng.standard_normal(net.size)
    x = rng.random((2,) + shape)
    y, caches = net.forward(x)
    dy = rng.standard_normal(y.shape)
    g = net.backward(dy, caches)
    idx = rng.choice(net.size, size=40, replace=False)  # a sample of coordinates keeps it quick
    theta0 = net.theta.copy()

    def loss_at(i, eps):
        net.theta[i] = theta0[i] + eps
        out = float(np.sum(net(x) * dy))
        net.theta[i] = theta0[i]
        return out

    num = np.array([(loss_at(i, 1e-6) - loss_at(i, -1e-6)) / 2e-6 for i in idx])
    assert rel_error(g[idx], num) < 1e-6
    v = rng.standard_normal(net.size)
    assert rel_error(net.jvp(v, caches), numerical_jvp(output_at(net, x), theta0, v)) < 1e-6


def test_flat_parameter_views_share_memory():
    net = mlp(3, (4,), 2)
    net.theta[:] = np.arange(net.size)
    blocks = [b for layer in net.w for b in layer]
    assert [b.shape for b in blocks] == [(3, 4), (4,), (4, 2), (2,)]  # Dense, Tanh (none), Dense
    assert all(np.shares_memory(b, net.theta) for b in blocks)
    # the blocks tile θ in order, without gaps or overlaps
    np.testing.assert_array_equal(np.concatenate([b.ravel() for b in blocks]), np.arange(net.size))
    net.theta[:] = 0.0  # writes through θ reach every layer's view
    assert all(not b.any() for b in blocks)
    net.w[2][1][...] = 7.0  # and writes through a view reach θ
    assert np.array_equal(net.theta[-2:], [7.0, 7.0]) and not net.theta[:-2].any()
    g = np.ones(net.size)
    g_views = [b for layer in net.views(g) for b in layer]
    assert [b.shape for b in g_views] == [b.shape for b in blocks]
    assert all(np.shares_memory(b, g) for b in g_views)  # views of any flat vector, e.g. a gradient
    g_views[1][...] = 5.0
    assert np.array_equal(g[12:16], np.full(4, 5.0))


def test_checker_catches_a_derivative_off_by_1e_3():
    """The gradient check must fail when the analytic derivative is wrong by 0.1%."""
    net, x = make_layer("dense")
    dy = np.random.default_rng(2).standard_normal(net(x).shape)
    _, grad = first_layer_backward(net, x, dy)
    num = numerical_grad(lambda _: float(np.sum(net(x) * dy)), net.theta)
    assert rel_error(grad, num) < 1e-6
    assert rel_error(grad * (1 + 1e-3), num) > 1e-6
    bad = grad.copy()
    bad[3] += 1e-3 * np.abs(grad).max()
    assert rel_error(bad, num) > 1e-6


def test_atari_cnn_parameter_count_and_shapes(rng):
    net = atari_cnn((42, 42, 4), 6).init(rng)
    # two 16-channel 4×4 stride-2 convs, 20 fully connected units, 6 outputs (paper Sec. 8.2)
    assert [layer.out_shape for layer in net.layers] == [
        (20, 20, 16), (20, 20, 16), (9, 9, 16), (9, 9, 16), (9 * 9 * 16,), (20,), (20,), (6,)]
    assert net.out_shape == (6,)
    assert net.size == (4 * 4 * 4 * 16 + 16) + (4 * 4 * 16 * 16 + 16) + (9 * 9 * 16 * 20 + 20) + (20 * 6 + 6)
    assert 30_000 < net.size < 34_000  # the paper's policy has "33,500" parameters
    y = net(rng.random((3, 42, 42, 4)).astype(np.float32))
    assert y.shape == (3, 6) and y.dtype == np.float32
    nature = atari_cnn((84, 84, 4), 6, kind="nature")
    assert [layer.out_shape for layer in nature.layers if isinstance(layer, (Conv2d, Dense))] == [
        (20, 20, 32), (9, 9, 64), (7, 7, 64), (512,), (6,)]
    assert nature.size > 1_000_000


def test_bad_input_errors_name_layer_and_shapes():
    net = mlp(4, (5,), 2)
    with pytest.raises(ShapeError, match=r"Dense.*\(3, 5\).*\(4,\)"):
        net(np.zeros((3, 5)))
    with pytest.raises(ShapeError, match="dtype float32"):
        net(np.zeros((3, 4), dtype=np.float32))
    with pytest.raises(ShapeError, match="outputs"):
        Sequential([Dense((4,), 3), Dense((5,), 2)])
    with pytest.raises(ShapeError, match="kernel"):
        Conv2d((3, 3, 1), 2, kernel=5)
    with pytest.raises(ValueError, match="activation"):
        mlp(2, (3,), 1, activation="sigmoid")


def test_conv_passes_do_not_depend_on_the_block_size(rng, monkeypatch):
    """Conv2d runs over blocks of BLOCK_BYTES of columns: forward, backward and jvp with blocks of
    one state each equal the passes over the whole batch in one block (float64: to round-off)."""
    import trpo_np.nn as nn

    net = atari_cnn((20, 20, 3), 4, dtype=np.float64).init(rng)
    net.theta += 0.1 * rng.standard_normal(net.size)
    x, v = rng.standard_normal((5, 20, 20, 3)), rng.standard_normal(net.size)

    def passes():
        y, caches = net.forward(x)
        return y, net(x), net.backward(np.cos(y), caches), net.jvp(v, caches)

    whole = passes()
    monkeypatch.setattr(nn, "BLOCK_BYTES", 1)  # one state per block
    for a, b in zip(whole, passes()):
        assert rel_error(a, b) < 1e-13


def test_call_equals_forward_and_leaves_the_input_alone(rng):
    """``net(x)`` (no caches, temporaries overwritten in place) gives forward's output and does not
    write into x, also when the first layer is an activation."""
    for net, x in [(atari_cnn((12, 12, 2), 3, dtype=np.float64).init(rng), rng.standard_normal((3, 12, 12, 2))),
                   (Sequential([ReLU((4,)), Dense((4,), 2), Tanh((2,))], np.float64).init(rng),
                    rng.standard_normal((6, 4)))]:
        x0 = x.copy()
        assert rel_error(net(x), net.forward(x)[0]) < 1e-14
        assert np.array_equal(x, x0)

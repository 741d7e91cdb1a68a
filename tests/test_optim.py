"""Conjugate gradient, line search and the TRPO step; GAE on a hand-computed example."""

import numpy as np
import pytest

from trpo_np.nn import mlp
from trpo_np.optim import Adam, conjugate_gradient, line_search, trpo_step
from trpo_np.samplers import Paths
from trpo_np.value import ValueFunction, gae, paths_gae


@pytest.mark.parametrize("n,seed", [(5, 0), (20, 1), (50, 2)])
def test_cg_matches_linear_solve_on_spd(n, seed):
    rng = np.random.default_rng(seed)
    Q = rng.standard_normal((n, n))
    A = Q @ Q.T + 0.5 * np.eye(n)
    b = rng.standard_normal(n)
    x, res, k = conjugate_gradient(lambda v: A @ v, b, iters=3 * n, tol=1e-20)
    assert np.allclose(x, np.linalg.solve(A, b), rtol=1e-7, atol=1e-9)
    assert res < 1e-8 and k <= 3 * n


def test_cg_stops_at_the_residual_tolerance_and_after_iters():
    A = np.diag([1.0, 2.0, 3.0, 4.0])
    b = np.ones(4)
    bb = float(b @ b)  # the tolerance is relative: ‖r‖² < tol·‖b‖²
    x2, res2, k = conjugate_gradient(lambda v: A @ v, b, iters=2)
    assert k == 2 and res2 ** 2 >= 1e-10 * bb  # stopped by iters, the default tolerance not yet met
    x, res, k = conjugate_gradient(lambda v: A @ v, b, iters=100, tol=1e-12)
    assert k == 4 and res ** 2 < 1e-12 * bb  # exact in n steps for n distinct eigenvalues
    # a tolerance that the second iterate meets and the first does not: CG stops after two
    # iterations, before iters and before n, with the second iterate
    _, res1, _ = conjugate_gradient(lambda v: A @ v, b, iters=1, tol=0.0)
    assert res2 < res1
    tol = res1 * res2 / bb  # res2² < tol·‖b‖² < res1²
    x, res, k = conjugate_gradient(lambda v: A @ v, b, iters=100, tol=tol)
    assert k == 2 and res ** 2 < tol * bb and np.array_equal(x, x2)


@pytest.mark.parametrize("scale", [1e-7, 1.0, 1e5])
def test_cg_iterations_do_not_depend_on_the_scale_of_b(scale):
    """A tiny gradient (the vine's unstandardized Q̂ differences) gets the same CG iterations and
    the same direction as a large one: the TRPO step rescales x to the KL bound."""
    rng = np.random.default_rng(3)
    Q = rng.standard_normal((8, 8))
    A = Q @ Q.T + 0.1 * np.eye(8)
    b = rng.standard_normal(8)
    x1, _, k1 = conjugate_gradient(lambda v: A @ v, b, iters=10)
    xs, _, ks = conjugate_gradient(lambda v: A @ v, scale * b, iters=10)
    assert ks == k1 > 0 and np.allclose(xs / scale, x1, rtol=1e-9, atol=0)


class QuadraticProblem:
    """L(θ) = gᵀθ, KL(θ) = ½ (θ−θ₀)ᵀ F (θ−θ₀) scaled by ``kl_scale`` (>1: the quadratic model
    underestimates the true KL, so the full step breaks the bound)."""

    def __init__(self, kl_scale=1.0, seed=0, n=6):
        rng = np.random.default_rng(seed)
        Q = rng.standard_normal((n, n))
        self.F = Q @ Q.T + np.eye(n)
        self.g = rng.standard_normal(n)
        self.theta_old = rng.standard_normal(n)
        self.theta = self.theta_old.copy()
        self.kl_scale = kl_scale

    def loss_and_grad(self):
        return float(self.g @ self.theta_old), self.g.copy()

    def fvp(self, v):
        return self.F @ v

    def evaluate(self, theta):
        self.theta = theta.copy()
        d = theta - self.theta_old
        return float(self.g @ theta), self.kl_scale * 0.5 * float(d @ self.F @ d), 0.0


def test_trpo_step_takes_the_natural_gradient_step_on_the_kl_boundary():
    prob = QuadraticProblem()
    st = trpo_step(prob, max_kl=0.01, cg_iters=50)
    nat = np.linalg.solve(prob.F, prob.g)
    step = prob.theta - prob.theta_old
    assert st["accepted"] and st["backtracks"] == 0
    assert np.allclose(step, np.sqrt(2 * 0.01 / (nat @ prob.F @ nat)) * nat, rtol=1e-6)
    assert st["kl"] == pytest.approx(0.01, rel=1e-6)  # ½ sᵀFs = δ, paper App. C
    assert st["expected_improve"] == pytest.approx(prob.g @ step, rel=1e-9)


def test_line_search_backtracks_until_the_kl_bound_holds():
    prob = QuadraticProblem(kl_scale=3.0)  # true KL is 3x the model: the full step has KL 0.03
    st = trpo_step(prob, max_kl=0.01, cg_iters=50, backtrack_coef=0.8)
    # needs 0.8^(2k)·0.03 <= 0.01 -> k = 3
    assert st["accepted"] and st["backtracks"] == 3
    assert st["kl"] <= 0.01


def test_line_search_refuses_kl_violations_even_when_the_surrogate_improves():
    prob = QuadraticProblem(kl_scale=1e6)  # every trial point improves L but breaks the bound
    st = trpo_step(prob, max_kl=0.01, cg_iters=50, max_backtracks=5)
    assert not st["accepted"] and st["backtracks"] == 5 and st["reason"]
    assert np.array_equal(prob.theta, prob.theta_old)  # θ restored to θ_old


def test_line_search_refuses_steps_that_do_not_improve():
    theta_old = np.zeros(3)
    calls = []

    def evaluate(theta):
        calls.append(theta.copy())
        return -1.0, 0.0, 0.0  # KL fine, surrogate worse

    theta, ok, nb, *_ = line_search(evaluate, theta_old, np.ones(3), L_old=0.0, max_kl=0.01, max_backtracks=4)
    assert not ok and nb == 4 and np.array_equal(theta, theta_old)
    assert np.array_equal(calls[-1], theta_old)  # the last evaluation sets θ_old back


def test_trpo_step_guards_zero_gradient_and_indefinite_curvature():
    prob = QuadraticProblem()
    prob.g[:] = 0
    st = trpo_step(prob)
    assert not st["accepted"] and "zero gradient" in st["reason"]
    assert st["entropy"] == 0.0 and st["kl"] == 0.0  # the entropy at θ_old is still reported
    prob = QuadraticProblem()
    prob.F = -np.eye(len(prob.g))
    st = trpo_step(prob)
    assert not st["accepted"] and "xᵀFx" in st["reason"] and st["entropy"] == 0.0
    assert np.array_equal(prob.theta, prob.theta_old)
    prob = QuadraticProblem()
    prob.g[0] = np.nan
    with pytest.raises(ValueError, match="non-finite surrogate or gradient"):
        trpo_step(prob)
    assert np.array_equal(prob.theta, prob.theta_old)


def test_line_search_stops_on_a_non_finite_value_with_theta_old():
    theta_old = np.zeros(3)
    calls = []

    def evaluate(theta):
        calls.append(theta.copy())
        return (np.nan, 0.0, 0.0) if len(calls) == 2 else (-1.0, 0.0, 0.0)

    with pytest.raises(ValueError, match="non-finite surrogate or KL"):
        line_search(evaluate, theta_old, np.ones(3), L_old=0.0, max_kl=0.01)
    assert np.array_equal(calls[-1], theta_old)


def test_gae_hand_computed_with_terminated_and_truncated_episodes():
    """One env, 5 steps: an episode terminates at t=1, the next is truncated at t=3, a third runs on."""
    g, lam = 0.9, 0.5
    rew = np.array([1.0, 2.0, 3.0, 4.0, 5.0])[:, None]
    val = np.array([0.5, 1.0, 1.5, 2.0, 2.5])[:, None]
    term = np.array([0, 1, 0, 0, 0], dtype=bool)[:, None]
    trunc = np.array([0, 0, 0, 1, 0], dtype=bool)[:, None]
    # V(s_{t+1}): next state's value; at t=1 irrelevant (terminal); at t=3 the final observation's
    # value 10.0; after t=4 the bootstrap value 3.0
    next_val = np.array([1.0, 99.0, 2.0, 10.0, 3.0])[:, None]
    adv, ret = gae(rew, val, next_val, term, term | trunc, g, lam)
    d = [1 + g * 1.0 - 0.5, 2 - 1.0, 3 + g * 2.0 - 1.5, 4 + g * 10.0 - 2.0, 5 + g * 3.0 - 2.5]
    expect = [d[0] + g * lam * d[1], d[1], d[2] + g * lam * d[3], d[3], d[4]]
    assert np.allclose(adv[:, 0], expect)
    assert np.allclose(ret, adv + val)


def test_adam_minimizes_a_quadratic():
    theta = np.array([3.0, -2.0])
    opt = Adam(2, lr=0.1)
    for _ in range(500):
        opt.step(theta, 2 * theta)
    assert np.abs(theta).max() < 1e-2


def test_value_function_predicts_in_the_batch_reward_unit(rng):
    """V fitted to targets in reward unit 0.5 is used at 0.5 · (s / 0.5) in a batch with scale s:
    GAE of such a batch sees exactly V converted to the batch's unit (single path and vine alike)."""
    T, E = 6, 2
    vf = ValueFunction(mlp(3, (5,), 1, dtype=np.float64).init(rng), epochs=2, minibatch=4)
    obs_te = rng.standard_normal((T, E, 3))
    paths = Paths(obs_te, np.zeros((T, E)), np.zeros((T, E)), rng.standard_normal((T, E)),
                  np.zeros((T, E), bool), np.zeros((T, E), bool), rng.standard_normal((E, 3)),
                  np.zeros((0, 3)), (np.zeros(0, np.intp), np.zeros(0, np.intp)), None, [], None)
    assert vf.rescale(0.3) == 1.0  # not fitted yet: no unit to convert from
    vf.fit(paths.flat(obs_te), rng.standard_normal(T * E), rng, unit=0.5)
    _, _, val_unscaled = paths_gae(vf, paths, 0.99, 0.95)  # a batch without reward scaling
    paths.reward_scale = 0.25
    adv_te, ret_te, val_te = paths_gae(vf, paths, 0.99, 0.95)
    np.testing.assert_allclose(val_te, 0.5 * val_unscaled, rtol=1e-12)
    np.testing.assert_allclose(ret_te, adv_te + val_te, rtol=1e-12)

"""Policies: surrogate gradient and Fisher-vector product against independent numerical oracles."""

import numpy as np
import pytest

from tests.gradcheck import (make_trpo_batch, mean_kl_grad, numerical_jacobian, numerical_jvp, rel_error,
                             surrogate_gradient_check)
from trpo_np.distributions import Categorical, DiagGaussian
from trpo_np.nn import ShapeError, atari_cnn, mlp
from trpo_np.policy import Policy, single_path_objective


def mlp_gaussian(n=5):
    rng = np.random.default_rng(0)
    pol = Policy(mlp(4, (6, 5), 3, out_gain=1.0, dtype=np.float64).init(rng), DiagGaussian(3))
    pol.theta[:] += 0.2 * rng.standard_normal(pol.size)
    return pol, rng.standard_normal((n, 4))


def mlp_categorical(n=5):
    rng = np.random.default_rng(1)
    pol = Policy(mlp(4, (6,), 3, out_gain=1.0, dtype=np.float64).init(rng), Categorical(3))
    pol.theta[:] += 0.2 * rng.standard_normal(pol.size)
    return pol, rng.standard_normal((n, 4))


def cnn_categorical(n=3):
    rng = np.random.default_rng(2)
    pol = Policy(atari_cnn((10, 10, 2), 4, dtype=np.float64).init(rng), Categorical(4), obs_scale=1 / 255)
    return pol, rng.integers(0, 256, size=(n, 10, 10, 2)).astype(np.uint8)


def tiny_gaussian(n=3):
    rng = np.random.default_rng(3)
    pol = Policy(mlp(2, (3,), 2, out_gain=1.0, dtype=np.float64).init(rng), DiagGaussian(2))
    pol.theta[:] += 0.3 * rng.standard_normal(pol.size)
    return pol, rng.standard_normal((n, 2))


POLICIES = [mlp_gaussian, mlp_categorical, cnn_categorical]


def make_batch(make, damping=0.0, ent_coef=0.0):
    pol, obs = make()
    rng = np.random.default_rng(7)
    act, logp_old = pol.act(obs, rng)
    adv = rng.standard_normal(len(obs))
    # evaluate the surrogate away from θ_old, where the ratio is not 1
    theta_old = pol.theta.copy()
    pol.theta[:] += 0.05 * rng.standard_normal(pol.size)
    batch = make_trpo_batch(pol, obs, act, single_path_objective(logp_old, adv), damping=damping, ent_coef=ent_coef)
    return pol, batch, theta_old


@pytest.mark.parametrize("ent_coef", [0.0, 0.3])
@pytest.mark.parametrize("make", POLICIES)
def test_surrogate_gradient_against_central_differences(make, ent_coef):
    """g of L (and of L + c·H̄ with an entropy bonus) against central differences of evaluate's value."""
    pol, batch, _ = make_batch(make, ent_coef=ent_coef)
    g, num = surrogate_gradient_check(batch)
    L, _ = batch.loss_and_grad()
    assert abs(L - batch.evaluate(pol.theta.copy())[0]) < 1e-12
    assert rel_error(g, num) < 1e-6


@pytest.mark.parametrize("make", POLICIES)
def test_the_entropy_bonus_adds_c_times_the_mean_entropy(make):
    pol, plain, _ = make_batch(make)
    pol2, bonus, _ = make_batch(make, ent_coef=0.3)
    theta = pol.theta.copy()
    L0, _, h = plain.evaluate(theta)
    L1, _, _ = bonus.evaluate(theta)
    assert abs(L1 - (L0 + 0.3 * h)) < 1e-12


@pytest.mark.parametrize("make", POLICIES)
def test_fvp_is_the_derivative_of_the_mean_kl_gradient(make):
    """F v = d/dε ∇ KL̄(θ_old, θ_old + εv) at ε = 0 (central difference of the exact gradient)."""
    pol, obs = make()
    act, logp_old = pol.act(obs, np.random.default_rng(8))
    batch = make_trpo_batch(pol, obs, act, single_path_objective(logp_old, np.ones(len(obs))), damping=0.0)
    theta_old = pol.theta.copy()
    v = np.random.default_rng(9).standard_normal(pol.size)
    fv = batch.fvp(v)
    num = numerical_jvp(lambda t: mean_kl_grad(batch, t), theta_old, v, eps=1e-5)
    assert rel_error(fv, num) < 1e-4
    assert np.allclose(mean_kl_grad(batch, theta_old), 0, atol=1e-12)  # KL is minimal at θ_old


@pytest.mark.parametrize("make", [tiny_gaussian, mlp_categorical])
def test_fvp_against_explicit_jt_m_j(make):
    """On a tiny net: F = (1/N) Σ_n J_nᵀ M_n J_n with J from finite differences, M from closed forms."""
    pol, obs = make()
    n = len(obs)
    act, logp_old = pol.act(obs, np.random.default_rng(1))
    batch = make_trpo_batch(pol, obs, act, single_path_objective(logp_old, np.ones(n)), damping=0.0)
    theta_old = pol.theta.copy()

    def params_flat(t):
        pol.theta[:] = t
        p, _ = pol.params(pol.preprocess(obs))
        pol.theta[:] = theta_old
        if len(p) == 2:
            return np.concatenate([p[0], np.broadcast_to(p[1], p[0].shape)], axis=1)  # (n, 2a)
        return p[0]

    J = numerical_jacobian(params_flat, theta_old).reshape(n, -1, pol.size)
    p, _ = pol.params(pol.preprocess(obs))
    F = np.zeros((pol.size, pol.size))
    for i in range(n):  # build M_n explicitly, column by column from the closed form
        k = J.shape[1]
        M = np.zeros((k, k))
        for j in range(k):
            e = np.zeros((1, k))
            e[0, j] = 1
            pi = p.rows(slice(i, i + 1))
            if len(p) == 2:
                a = k // 2
                mu = pol.dist.fisher(pi, (e[:, :a], e[:, a:]))
                M[:, j] = np.concatenate([mu[0].ravel(), mu[1].ravel()])
            else:
                M[:, j] = pol.dist.fisher(pi, (e,))[0].ravel()
        F += J[i].T @ M @ J[i] / n
    v = np.random.default_rng(2).standard_normal(pol.size)
    assert rel_error(batch.fvp(v), F @ v) < 1e-6


@pytest.mark.parametrize("make", POLICIES)
def test_fvp_symmetric_and_positive_semidefinite(make):
    pol, obs = make()
    act, logp_old = pol.act(obs, np.random.default_rng(3))
    batch = make_trpo_batch(pol, obs, act, single_path_objective(logp_old, np.ones(len(obs))), damping=0.0)
    rng = np.random.default_rng(4)
    for _ in range(3):
        u, v = rng.standard_normal(pol.size), rng.standard_normal(pol.size)
        uFv, vFu = u @ batch.fvp(v), v @ batch.fvp(u)
        assert abs(uFv - vFu) < 1e-10 * max(abs(uFv), 1.0)
        assert v @ batch.fvp(v) >= -1e-12
    damped = make_trpo_batch(pol, obs, act, single_path_objective(logp_old, np.ones(len(obs))), damping=0.1)
    assert rel_error(damped.fvp(v), batch.fvp(v) + 0.1 * v) < 1e-12


def test_fvp_subsample_uses_a_subset_of_states():
    pol, obs = mlp_categorical(n=40)
    act, logp_old = pol.act(obs, np.random.default_rng(5))
    obj = single_path_objective(logp_old, np.ones(40))
    sub = make_trpo_batch(pol, obs, act, obj, damping=0.0, fvp_fraction=0.25, rng=np.random.default_rng(6))
    assert len(sub.f_obs) == 10
    idx = [int(np.argmin(np.abs(obs - row).sum(1))) for row in sub.f_obs]
    full_on_subset = make_trpo_batch(pol, obs[idx], act[idx], obj, damping=0.0)
    v = np.random.default_rng(7).standard_normal(pol.size)
    assert rel_error(sub.fvp(v), full_on_subset.fvp(v)) < 1e-12
    with pytest.raises(ValueError, match="rng"):
        make_trpo_batch(pol, obs, act, obj, fvp_fraction=0.5)


@pytest.mark.parametrize("make", [mlp_gaussian, cnn_categorical])
def test_chunked_batch_gives_the_same_loss_gradient_fvp_and_kl(make):
    """Processing in chunks (bounded memory for large image batches) changes nothing but round-off."""
    pol, obs = make(n=7)
    act, logp_old = pol.act(obs, np.random.default_rng(5))
    obj = single_path_objective(logp_old, np.random.default_rng(6).standard_normal(7))
    whole = make_trpo_batch(pol, obs, act, obj, damping=0.0)
    parts = make_trpo_batch(pol, obs, act, obj, damping=0.0, chunk=3)
    assert len(parts.f_chunks) == 3
    (La, ga), (Lb, gb) = whole.loss_and_grad(), parts.loss_and_grad()
    assert abs(La - Lb) < 1e-12 and rel_error(ga, gb) < 1e-12
    v = np.random.default_rng(7).standard_normal(pol.size)
    assert rel_error(whole.fvp(v), parts.fvp(v)) < 1e-12
    theta = whole.theta_old + 0.01 * v
    assert np.allclose(whole.evaluate(theta), parts.evaluate(theta), rtol=1e-12)


@pytest.mark.parametrize("make", [mlp_gaussian, mlp_categorical])
def test_derivatives_at_theta_old_refuse_a_moved_theta(make):
    """loss_and_grad and F v use forward caches taken at θ_old: after evaluate(θ) moved the policy
    they raise instead of returning a wrong value, and work again once θ_old is back."""
    pol, obs = make()
    act, logp_old = pol.act(obs, np.random.default_rng(1))
    batch = make_trpo_batch(pol, obs, act, single_path_objective(logp_old, np.ones(len(obs))))
    v = np.random.default_rng(2).standard_normal(pol.size)
    fv, (_, g) = batch.fvp(v), batch.loss_and_grad()
    batch.evaluate(batch.theta_old + 0.1 * v)
    with pytest.raises(RuntimeError, match="θ_old"):
        batch.fvp(v)
    with pytest.raises(RuntimeError, match="θ_old"):
        batch.loss_and_grad()
    batch.evaluate(batch.theta_old)
    np.testing.assert_array_equal(batch.fvp(v), fv)
    np.testing.assert_array_equal(batch.loss_and_grad()[1], g)


def test_policy_rejects_bad_observations():
    pol, obs = mlp_gaussian()
    bad = obs.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="observation 2 .*NaN"):
        pol.act(bad, np.random.default_rng(0))
    with pytest.raises(ShapeError, match=r"\(5, 3\).*\(4,\)"):
        pol.act(obs[:, :3], np.random.default_rng(0))
    with pytest.raises(ShapeError, match="dtype"):
        pol.act(obs.astype(str), np.random.default_rng(0))


def test_deterministic_act_is_the_mode():
    pol, obs = mlp_gaussian()
    a, _ = pol.act(obs, np.random.default_rng(0), deterministic=True)
    assert np.allclose(a, pol.params(pol.preprocess(obs))[0][0])


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_sampler_keeps_pi_old_parameters_of_its_states(env_id):
    """The single-path sampler keeps π_old's distribution parameters from acting (the update's
    θ_old forward pass is skipped); they equal a fresh pass over the batch's states."""
    from trpo_np.config import Config
    from trpo_np.train import Trainer

    cfg = Config.for_env(env_id)
    cfg.num_envs = 2
    tr = Trainer(cfg, None, quiet=True)
    sampler = tr.make_sampler()
    paths = sampler.sample(64).paths
    sampler.close()
    pol = tr.policy
    fresh, _ = pol.params(pol.preprocess(paths.flat(paths.obs_te)))
    assert len(paths.p_old[0]) == paths.steps
    for kept, new in zip(paths.p_old, fresh):
        np.testing.assert_allclose(kept, new, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pol.dist.logp(paths.p_old, paths.flat(paths.act_te)), paths.logp_te.reshape(-1),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make", [mlp_gaussian, mlp_categorical])
def test_actor_acts_as_params_and_sample_logp(make):
    """The sampler's per-batch actor (σ and constants computed once) gives the numbers of
    params + sample_logp exactly, and log π of its draws is the distribution's logp."""
    pol, obs = make()
    x = pol.preprocess(obs)
    noise = pol.dist.noise(np.random.default_rng(8), (len(obs),))
    p, a, logp = pol.actor()(x, noise)
    p_ref, _ = pol.params(x)
    a_ref, logp_ref = pol.dist.sample_logp(p_ref, None, noise)
    for got, ref in zip(p + (a, logp), p_ref + (a_ref, logp_ref)):
        np.testing.assert_array_equal(got, ref)
    np.testing.assert_allclose(logp, pol.dist.logp(p, a), rtol=1e-12)


def test_normalizer_clips_standardized_observations():
    from trpo_np.normalize import RunningMeanStd

    rng = np.random.default_rng(9)
    rms = RunningMeanStd((3,), clip=2.0)
    rms.update(rng.standard_normal((50, 3)) * [1.0, 3.0, 0.1] + 5.0)
    x = rng.standard_normal((20, 3)) * 4.0 + 5.0
    expect = np.clip((x - rms.mean) / np.sqrt(rms.var + rms.eps), -2.0, 2.0).astype(np.float32)
    got = rms.normalizer(np.float32)(x)
    assert got.dtype == np.float32 and (np.abs(got) == 2.0).any() and (np.abs(got) < 2.0).any()
    np.testing.assert_allclose(got, expect, rtol=1e-6)
    np.testing.assert_array_equal(rms.normalize(x, np.float32), got)

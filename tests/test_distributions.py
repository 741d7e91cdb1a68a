"""Distributions: closed forms, Monte Carlo, derivatives and the Fisher metric M."""

import math

import numpy as np
import pytest

from tests.gradcheck import numerical_grad, numerical_jacobian, rel_error
from trpo_np.distributions import Categorical, DiagGaussian


def gaussian_case(n=4, a=3):
    rng = np.random.default_rng(1)
    p_old = (rng.standard_normal((n, a)), 0.3 * rng.standard_normal(a))
    p = (rng.standard_normal((n, a)), 0.3 * rng.standard_normal(a))
    return DiagGaussian(a), p_old, p


def categorical_case(n=4, k=5):
    rng = np.random.default_rng(2)
    return Categorical(k), (rng.standard_normal((n, k)),), (rng.standard_normal((n, k)),)


def test_gaussian_logp_and_entropy_closed_forms(rng):
    d, _, p = gaussian_case()
    m, l = p
    a = rng.standard_normal(m.shape)
    sd = np.exp(l)
    ref = np.sum(-0.5 * ((a - m) / sd) ** 2 - np.log(sd) - 0.5 * math.log(2 * math.pi), axis=1)
    assert rel_error(d.logp(p, a), ref) < 1e-12
    assert rel_error(d.entropy(p), np.full(4, np.sum(0.5 * np.log(2 * math.pi * math.e * sd ** 2)))) < 1e-12


def test_categorical_logp_and_entropy_closed_forms():
    d, _, p = categorical_case()
    pr = np.exp(p[0]) / np.exp(p[0]).sum(1, keepdims=True)
    a = np.array([0, 4, 2, 1])
    assert rel_error(d.logp(p, a), np.log(pr[np.arange(4), a])) < 1e-12
    assert rel_error(d.entropy(p), -np.sum(pr * np.log(pr), 1)) < 1e-12


def repeat_states(p, k):
    """The parameters of k copies of the batch of states, copy-major: per-state arrays (n, ·)
    tiled to (k·n, ·); the Gaussian's shared log-std (a,) as it is."""
    return tuple(np.tile(x, (k, 1)) if x.ndim == 2 else x for x in p)


@pytest.mark.parametrize("case", [gaussian_case, categorical_case])
def test_kl_entropy_and_sampling_against_monte_carlo(case):
    d, p_old, p = case()
    rng = np.random.default_rng(3)
    n_samples, n = 20000, len(p_old[0])
    # all draws in one batched call: row s·n + i is draw s at state i
    a = d.sample_logp(repeat_states(p_old, n_samples), rng)[0]
    lo = d.logp(repeat_states(p_old, n_samples), a).reshape(n_samples, n)
    l1 = d.logp(repeat_states(p, n_samples), a).reshape(n_samples, n)
    kl_mc, kl = np.mean(lo - l1, axis=0), d.kl(p_old, p)
    se = np.std(lo - l1, axis=0) / math.sqrt(n_samples)
    assert np.all(np.abs(kl_mc - kl) < 5 * se + 1e-12)
    h_mc, se_h = -lo.mean(0), lo.std(0) / math.sqrt(n_samples)
    assert np.all(np.abs(h_mc - d.entropy(p_old)) < 5 * se_h + 1e-12)
    assert np.all(d.kl(p_old, p_old) < 1e-12)


def flat(p):
    return np.concatenate([x.ravel() for x in p])


def flat_cotangent(dp, like):
    """A cotangent flattened like the parameters ``like``: a shared field (the Gaussian ℓ) has a
    row per state in the cotangent, which the policy sums over the states (Policy.vjp)."""
    return flat([x.sum(axis=0) if x.shape != y.shape else x for x, y in zip(dp, like)])


def unflat(z, like):
    out, i = [], 0
    for x in like:
        out.append(z[i:i + x.size].reshape(x.shape))
        i += x.size
    return tuple(out)


@pytest.mark.parametrize("case", [gaussian_case, categorical_case])
def test_logp_kl_and_entropy_gradients_against_central_differences(case):
    d, p_old, p = case()
    rng = np.random.default_rng(4)
    a = d.sample_logp(p_old, rng)[0]
    w = rng.standard_normal(len(a))
    num = numerical_grad(lambda z: float(np.sum(w * d.logp(unflat(z, p), a))), flat(p))
    assert rel_error(flat_cotangent(d.dlogp(p, a, w), p), num) < 1e-6
    num = numerical_grad(lambda z: float(np.sum(w * d.kl(p_old, unflat(z, p)))), flat(p))
    assert rel_error(flat_cotangent(d.dkl(p_old, p, w), p), num) < 1e-6
    num = numerical_grad(lambda z: float(np.sum(w * d.entropy(unflat(z, p)))), flat(p))
    assert rel_error(flat_cotangent(d.dentropy(p, w), p), num) < 1e-6


@pytest.mark.parametrize("case", [gaussian_case, categorical_case])
def test_fisher_metric_is_the_finite_difference_hessian_of_kl(case, rng):
    """M u = ∇²_p KL(p_old ‖ p)|_{p=p_old} u, with the Hessian from differences of the exact gradient."""
    d, p_old, _ = case()
    n = len(p_old[0])
    w = np.ones(n)
    grad = lambda z: flat_cotangent(d.dkl(p_old, unflat(z, p_old), w), p_old)
    H = numerical_jacobian(grad, flat(p_old), eps=1e-5)
    u = rng.standard_normal(H.shape[0])
    ut = unflat(u, p_old)
    if isinstance(d, DiagGaussian):  # ℓ is shared: M acts per state, then Jᵀ sums over states
        mu_m, mu_l = d.fisher(p_old, (ut[0], np.broadcast_to(ut[1], ut[0].shape)))
        mu = np.concatenate([mu_m.ravel(), mu_l.sum(0)])
    else:
        mu = flat(d.fisher(p_old, ut))
    assert rel_error(mu, H @ u) < 1e-4
    assert np.allclose(H, H.T, atol=1e-6)


def test_categorical_sampling_frequencies():
    d = Categorical(3)
    p = (np.log(np.array([[0.2, 0.5, 0.3]]).repeat(30000, 0)),)
    a = d.sample_logp(p, np.random.default_rng(5))[0]
    freq = np.bincount(a, minlength=3) / len(a)
    assert np.allclose(freq, [0.2, 0.5, 0.3], atol=0.01)


@pytest.mark.parametrize("case", [gaussian_case, categorical_case])
def test_sample_logp_returns_the_log_probability_of_the_draw(case):
    d, p, _ = case()
    a, logp = d.sample_logp(p, np.random.default_rng(6))
    assert rel_error(logp, d.logp(p, a)) < 1e-12

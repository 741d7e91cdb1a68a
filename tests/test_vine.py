"""The vine sampler: simulator restore, unbiased Q̂ with common random numbers, surrogate gradients,
learning CartPole, and the error for environments without state restore."""

import gymnasium as gym
import numpy as np
import pytest

from tests.gradcheck import make_trpo_batch, numerical_grad, rel_error, surrogate_gradient_check
from trpo_np import envs as envs_mod
from trpo_np.config import Config
from trpo_np.distributions import Categorical, DiagGaussian
from trpo_np.evaluation import evaluate
from trpo_np.nn import mlp
from trpo_np.policy import Policy, single_path_objective
from trpo_np.simstate import _time_limit, get_state as get_env_state, set_state as set_env_state, state_kind
from trpo_np.train import Trainer
from trpo_np.vine import (rollout_branches, standardized_differences, vine_continuous_objective,
                          vine_discrete_objective)


# -- a chain MDP with a closed-form Q ------------------------------------------------------------
class Chain(gym.Env):
    """Positions 0..L−1, start at 0, L−1 terminal. Actions: 0 left, 1 right, 2 stay. A move goes
    the intended way with probability 0.8, else the other way (clamped at 0). Reward
    −0.1 + 1[reached L−1] + 0.5·ε, ε ~ N(0, 1). Each step draws one uniform and one normal, so
    two copies with the same RNG state see the same random numbers whatever they do."""

    L, P_OK, NOISE = 5, 0.8, 0.5

    def __init__(self, render_mode=None):
        self.observation_space = gym.spaces.Box(0.0, 1.0, (self.L,), np.float64)
        self.action_space = gym.spaces.Discrete(3)
        self.pos = 0

    def _obs(self):
        return np.eye(self.L)[self.pos]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = 0
        return self._obs(), {}

    def step(self, action):
        u, eps = self.np_random.random(), self.np_random.standard_normal()
        move = (-1, 1, 0)[int(action)] * (1 if u < self.P_OK else -1)
        self.pos = min(max(self.pos + move, 0), self.L - 1)
        term = self.pos == self.L - 1
        return self._obs(), -0.1 + float(term) + self.NOISE * eps, term, False, {}

    # the state protocol of trpo_np.vine: position and RNG
    def get_state(self):
        return self.pos, self.np_random.bit_generator.state

    def set_state(self, state):
        self.pos, self.np_random.bit_generator.state = state[0], state[1]


def chain_model():
    """P[s, a, s'] and expected reward R[s, a] of Chain."""
    L = Chain.L
    P, R = np.zeros((L, 3, L)), np.zeros((L, 3))
    for s in range(L - 1):
        for a, d in enumerate((-1, 1, 0)):
            for move, pr in ((d, Chain.P_OK), (-d, 1 - Chain.P_OK)):
                s2 = min(max(s + move, 0), L - 1)
                P[s, a, s2] += pr
                R[s, a] += pr * (-0.1 + float(s2 == L - 1))
    return P, R


def exact_q(pi_sa, T, gamma, v_end=None):
    """Q of: take a, follow π for T−1 more steps, then add γ^T v_end(s_T) (0 if None or terminal)."""
    P, R = chain_model()
    v = np.zeros(Chain.L) if v_end is None else np.array(v_end, dtype=float)
    v[Chain.L - 1] = 0.0  # terminal
    for _ in range(T):
        q = R + gamma * P @ v
        v = np.sum(pi_sa * q, axis=1)
        v[Chain.L - 1] = 0.0
    return q


def chain_policy(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    pol = Policy(mlp(Chain.L, (6,), 3, out_gain=1.0, dtype=dtype).init(rng), Categorical(3))
    pol.theta[:] += 0.5 * rng.standard_normal(pol.size)
    return pol


def policy_table(pol):
    return pol.dist.probs(pol.params(pol.preprocess(np.eye(Chain.L)))[0])


gym.register("VineChain-v0", entry_point=Chain)


class NoState(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        pass

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, False, {}


gym.register("VineNoState-v0", entry_point=NoState, max_episode_steps=10)


# -- simulator save/restore ----------------------------------------------------------------------
def replay(env, actions):
    out = [env.step(a)[:4] for a in actions]
    obs, rew, term, trunc = zip(*out)
    return np.array(obs), np.array(rew), np.array(term), np.array(trunc)


def assert_identical(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("env_id", ["Hopper-v4", "Swimmer-v4"])
def test_mujoco_restore_replays_identically(env_id):
    pytest.importorskip("mujoco")
    env, other = envs_mod.make_env(env_id), envs_mod.make_env(env_id)
    env.reset(seed=3)
    other.reset(seed=4)
    dim = env.action_space.shape[0]
    rng = np.random.default_rng(0)
    replay(env, 0.3 * rng.standard_normal((7, dim)))
    state = get_env_state(env)  # MuJoCo through trpo_np.envs.get_state
    assert state_kind(env) == "mujoco" and state["elapsed"] == 7
    actions = 0.5 * rng.standard_normal((20, dim))
    first = replay(env, actions)
    replay(env, rng.standard_normal((5, dim)))  # move away
    set_env_state(env, state)
    assert_identical(replay(env, actions), first)
    set_env_state(other, state)  # into another copy
    assert_identical(replay(other, actions), first)
    assert _time_limit(other)._elapsed_steps == 27


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_classic_control_restore_keeps_state_rng_and_time_limit(env_id):
    env, other = envs_mod.make_env(env_id), envs_mod.make_env(env_id)
    env.reset(seed=1)
    other.reset(seed=2)
    env.action_space.seed(0)
    replay(env, [env.action_space.sample() for _ in range(4)])
    assert state_kind(env) == "classic"
    state = get_env_state(env)
    actions = [env.action_space.sample() for _ in range(7)]
    first = replay(env, actions)
    set_env_state(other, state)
    assert_identical(replay(other, actions), first)
    _time_limit(env)._elapsed_steps = 0
    set_env_state(env, state)
    assert _time_limit(env)._elapsed_steps == 4
    assert_identical(replay(env, actions), first)


# -- Q̂: unbiased, and common random numbers reduce the variance of differences -------------------
def branch_q(pol, start, acts, M, T, gamma, crn, seed):
    """M replications of Q̂(start, a) for each a in acts from rollout_branches: (M, len(acts))."""
    rng = np.random.default_rng(seed)
    K, chunk = len(acts), 250
    envs = [Chain() for _ in range(chunk * K)]
    for e in envs:
        e.reset(seed=0)
    out = []
    for m0 in range(0, M, chunk):
        m = min(chunk, M - m0)
        if crn:  # the K branches of a replication share the env RNG and the policy noise
            rng_states = [np.random.default_rng(s).bit_generator.state for s in rng.integers(2**62, size=m)
                          for _ in range(K)]
            noise = np.repeat(pol.dist.noise(rng, (m, T - 1)), K, axis=0)
        else:
            rng_states = [np.random.default_rng(s).bit_generator.state for s in rng.integers(2**62, size=m * K)]
            noise = pol.dist.noise(rng, (m * K, T - 1))
        states = [{"env": (start, r), "elapsed": None} for r in rng_states]
        q, _ = rollout_branches(envs, states, np.tile(acts, m), noise, pol, T, gamma, kind="method")
        out.append(q.reshape(m, K))
    return np.concatenate(out)


def test_branch_q_is_unbiased_and_crn_reduces_variance_of_differences():
    pol, gamma, T, start, M = chain_policy(), 0.9, 6, 1, 1500
    q_true = exact_q(policy_table(pol), T, gamma)[start, :2]
    spread = {}
    for crn in (True, False):
        q = branch_q(pol, start, np.array([0, 1]), M, T, gamma, crn, seed=5)
        se = q.std(axis=0) / np.sqrt(M)
        assert np.all(np.abs(q.mean(axis=0) - q_true) < 4 * se), (crn, q.mean(axis=0), q_true, se)
        d = q[:, 1] - q[:, 0]
        assert abs(d.mean() - (q_true[1] - q_true[0])) < 4 * d.std() / np.sqrt(M)
        spread[crn] = d.var()
    assert spread[True] < 0.25 * spread[False], spread  # about 0.05 here


def test_sampler_batch_q_matches_closed_form_with_value_bootstrap():
    cfg = Config(env="VineChain-v0", method="vine", num_envs=2, dtype="float64", normalize_obs=False,
                 scale_reward=False, vine_states=300, vine_actions=3, vine_horizon=3, gamma=0.9, seed=1)
    tr = Trainer(cfg, run_dir=None, quiet=True)
    tr.policy.theta[:] += 0.3 * np.random.default_rng(0).standard_normal(tr.policy.size)
    tr.policy.theta[-3:] += [0.0, 1.5, 0.0]  # output bias: lean right, so the trunk visits the chain
    tr.vf.net.theta[-1] += 3.0  # output bias: a value the bootstrap term cannot hide
    sampler = tr.make_sampler()
    try:
        batch = sampler.sample(2000 + 300 * 3 * 3)  # the trunk gets what the branches leave
    finally:
        sampler.close()
    N, K, T = 300, 3, 3
    assert sampler.split(2000 + N * K * T) == (2000, N) and sampler.split(2 * N + N * K * T) == (2 * N, N)
    # a budget smaller than N·K·T and the smallest trunk (a run's last iteration): fewer rollout states
    assert sampler.split(512 + 10 * K * T + 5) == (518, 10) and sampler.split(100) == (512, 1)
    assert batch.paths.steps == 2000 and batch.q_nk.shape == (N, K) and batch.enumerated
    assert 0 < batch.branch_steps <= N * K * T
    np.testing.assert_array_equal(batch.act_nk, np.tile(np.arange(3), (N, 1)))
    pos = batch.obs_n.argmax(axis=1)
    trunk_obs = batch.paths.obs_te.reshape(-1, Chain.L)
    assert all((trunk_obs == o).all(axis=1).any() for o in batch.obs_n)  # rollout states come from the trunk
    surr = batch.surrogate()  # the KL and F of the policy step: every on-policy trunk state
    np.testing.assert_array_equal(surr.kl_obs, trunk_obs)
    assert len(surr.obs) == N * K and len(surr.kl_obs) == 2000
    v_end = tr.vf.predict(np.eye(Chain.L))  # bootstrap γ^T V(s_T) with the (untrained) value function
    q_true = exact_q(policy_table(tr.policy), T, cfg.gamma, v_end)
    err_n = (batch.q_nk - q_true[pos]).mean(axis=1)  # one independent number per rollout state
    assert abs(err_n.mean()) < 4 * err_n.std() / np.sqrt(N)
    assert abs(err_n.mean()) < 0.1


def test_sampler_draws_distinct_uniform_actions_when_the_space_is_larger_than_k():
    cfg = Config(env="VineChain-v0", method="vine", num_envs=1, dtype="float64", vine_states=20,
                 vine_actions=2, vine_horizon=2, seed=0)
    tr = Trainer(cfg, run_dir=None, quiet=True)
    sampler = tr.make_sampler()
    try:
        batch = sampler.sample(512 + 20 * 2 * 2)  # the smallest trunk and N·K·T branch steps
    finally:
        sampler.close()
    assert not batch.enumerated and batch.act_nk.shape == (20, 2)
    assert np.all(batch.act_nk[:, 0] != batch.act_nk[:, 1])
    np.testing.assert_allclose(batch.logq_nk, -np.log(3))
    # the trainer's one update takes a step on eq. (16) within the KL bound and fits V on the trunk
    theta_old, v_old = tr.policy.theta.copy(), tr.vf.net.theta.copy()
    stats = tr.update(batch)
    assert stats["accepted"] and 0 < stats["kl"] <= cfg.max_kl and stats["surr_after"] > stats["surr_before"]
    assert not np.array_equal(tr.policy.theta, theta_old) and not np.array_equal(tr.vf.net.theta, v_old)
    assert np.isfinite(stats["vf_loss"]) and tr.vf.unit == batch.paths.reward_scale


# -- surrogate gradients ---------------------------------------------------------------------------
def test_discrete_objective_gradient_and_baseline_invariance():
    rng = np.random.default_rng(0)
    pol = chain_policy(seed=2)
    N, K = 4, 3
    obs_n = rng.standard_normal((N, Chain.L))
    q_nk = rng.standard_normal((N, K))
    obs, act = np.repeat(obs_n, K, axis=0), np.tile(np.arange(K), N)
    # the objective's own ∂L/∂logp against central differences
    phi = vine_discrete_objective(q_nk)
    logp = np.log(rng.dirichlet(np.ones(K), size=N)).reshape(-1)
    assert rel_error(phi(logp)[1], numerical_grad(lambda x: phi(x)[0], logp.copy())) < 1e-7
    # ∇_θ L through the policy against central differences of L(θ)
    g, num = surrogate_gradient_check(make_trpo_batch(pol, obs, act, phi, kl_obs=obs_n))
    assert rel_error(g, num) < 1e-6
    assert rel_error(g * (1 + 1e-3 * rng.standard_normal(g.shape)), num) > 1e-5  # the check can fail
    # the state baseline b_n moves L by a constant, not its gradient (Σ_k π_θ(a_k|s) = 1):
    # eq. (15) without it has the same gradient
    def no_baseline(logp):
        w_nk = np.exp(logp.reshape(N, K)) * q_nk / N
        return float(w_nk.sum()), w_nk.reshape(-1)

    tb = make_trpo_batch(pol, obs, act, no_baseline, kl_obs=obs_n)
    assert rel_error(tb.loss_and_grad()[1], g) < 1e-10


def test_continuous_objective_gradient_and_score_function_at_theta_old():
    rng = np.random.default_rng(1)
    pol = Policy(mlp(4, (6, 5), 2, out_gain=1.0, dtype=np.float64).init(rng), DiagGaussian(2))
    pol.theta[:] += 0.2 * rng.standard_normal(pol.size)
    N, K = 4, 3
    obs_n = rng.standard_normal((N, 4))
    obs = np.repeat(obs_n, K, axis=0)
    act, logq = pol.act(obs, rng)  # a_nk ~ π_old(·|s_n)
    logq_nk, q_nk = logq.reshape(N, K), rng.standard_normal((N, K))
    phi = vine_continuous_objective(logq_nk, q_nk)
    x = logq + 0.3 * rng.standard_normal(N * K)
    assert rel_error(phi(x)[1], numerical_grad(lambda y: phi(y)[0], x.copy())) < 1e-7
    # at θ_old: r = 1, so ∇L = (1/NK) Σ (Q̂_nk − mean_k Q̂) ∇logπ, the single-path surrogate's gradient
    adv = (q_nk - q_nk.mean(axis=1, keepdims=True)).reshape(-1)
    g_old = make_trpo_batch(pol, obs, act, phi, kl_obs=obs_n).loss_and_grad()[1]
    g_sp = make_trpo_batch(pol, obs, act, single_path_objective(logq, adv)).loss_and_grad()[1]
    assert rel_error(g_old, g_sp) < 1e-10
    # away from θ_old, against central differences
    pol.theta[:] += 0.05 * rng.standard_normal(pol.size)
    g, num = surrogate_gradient_check(make_trpo_batch(pol, obs, act, phi, kl_obs=obs_n))
    assert rel_error(g, num) < 1e-6
    assert rel_error(g * (1 + 1e-3 * rng.standard_normal(g.shape)), num) > 1e-5


def test_standardized_differences_leave_the_step_unchanged_and_set_the_bonus_scale():
    from trpo_np.optim import trpo_step

    rng = np.random.default_rng(3)
    q_nk = 40.0 + 0.05 * rng.standard_normal((6, 4))  # small differences on a large level, as Q̂ under CRN
    adv = standardized_differences(q_nk)
    np.testing.assert_allclose(adv.mean(axis=1), 0.0, atol=1e-12)
    assert abs(np.sqrt(np.mean(adv ** 2)) - 1.0) < 1e-6
    np.testing.assert_allclose(adv * np.sqrt(np.mean((q_nk - q_nk.mean(axis=1, keepdims=True)) ** 2)),
                               q_nk - q_nk.mean(axis=1, keepdims=True), rtol=1e-6)
    # without a bonus the step (direction scaled to the KL bound, line search on L > L_old) is the same
    pol = Policy(mlp(4, (6, 5), 2, out_gain=1.0, dtype=np.float64).init(rng), DiagGaussian(2))
    obs_n = rng.standard_normal((6, 4))
    obs = np.repeat(obs_n, 4, axis=0)
    act, logq = pol.act(obs, rng)
    theta0, thetas = pol.theta.copy(), {}
    for name, q in [("raw", q_nk), ("standardized", adv)]:
        pol.theta[:] = theta0
        trpo_step(make_trpo_batch(pol, obs, act, vine_continuous_objective(logq.reshape(6, 4), q), kl_obs=obs_n,
                                  damping=0.1), max_kl=0.01)
        thetas[name] = pol.theta.copy()
    assert np.linalg.norm(thetas["raw"] - theta0) > 1e-3
    np.testing.assert_allclose(thetas["raw"], thetas["standardized"], rtol=1e-6, atol=1e-9)


# -- the trainer -----------------------------------------------------------------------------------
def test_vine_learns_cartpole():
    # N·K·T = 50·2·50 = 5,000 branch steps + a 3,000-step trunk per iteration; 120k env steps in all
    # (seeds 0-4 reach 498, 468, 500, 500, 500; at 80k steps 3 of the 5 had solved it).
    cfg = Config(env="CartPole-v1", method="vine", steps=120_000, batch_steps=8_000, num_envs=1,
                 vine_states=50, vine_actions=2, vine_horizon=50, max_kl=0.02, eval_every=0, seed=0)
    tr = Trainer(cfg, run_dir=None, quiet=True)
    last = tr.train()
    assert tr.branch_steps > 0 and tr.env_steps == tr.trunk_steps + tr.branch_steps >= 120_000
    assert last["branch_steps"] == tr.branch_steps
    returns = evaluate(cfg, tr.policy, tr.obs_rms, 10, seed=1000)
    assert np.mean(returns) >= 475, returns


def test_vine_on_env_without_state_restore_is_a_clear_error(tmp_path):
    from trpo_np.train import start_run

    out = str(tmp_path / "run")
    with pytest.raises(envs_mod.EnvError, match="--method vine needs simulator state save/restore"):
        start_run(Config(env="VineNoState-v0", method="vine", steps=100, eval_every=0), out, quiet=True)
    assert not tmp_path.joinpath("run").exists()  # fails before anything is written

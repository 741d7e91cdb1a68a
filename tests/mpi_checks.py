"""Checks that need several MPI ranks; tests/test_parallel.py runs them as
``mpiexec -n 2 python tests/mpi_checks.py CHECK``. Each check compares what the ranks compute
together with the one-process computation on the joined data (rank 0 does both) and exits 0
with "ok CHECK" on rank 0, or raises (and MPI aborts every rank)."""

import os
import sys

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from trpo_np import parallel  # noqa: E402
from trpo_np.distributions import DiagGaussian  # noqa: E402
from trpo_np.nn import mlp  # noqa: E402
from trpo_np.normalize import RunningMeanStd  # noqa: E402
from trpo_np.policy import Policy, Surrogate, TRPOBatch, single_path_objective  # noqa: E402
from trpo_np.value import ValueFunction, explained_variance  # noqa: E402


def rel_error(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), np.max(np.abs(b)), 1e-300))


def trpo_batch_sums(comm):
    """L, g, F v, the line search's (L, KL, entropy), and the value fit, on a batch of 13 states
    split 6 / 7 over 2 ranks, against one process on all 13 (float64)."""
    rng = np.random.default_rng(0)
    pol = Policy(mlp(4, (6, 5), 3, out_gain=1.0, dtype=np.float64).init(rng), DiagGaussian(3))
    pol.theta[:] += 0.2 * rng.standard_normal(pol.size)
    obs = rng.standard_normal((13, 4))
    act, logp_old = pol.act(obs, rng)
    adv = rng.standard_normal(13)
    v = rng.standard_normal(pol.size)
    mine = slice(0, 6) if comm.rank == 0 else slice(6, 13)

    def batch(c, sl, ent_coef):
        sur = Surrogate(obs[sl], act[sl], single_path_objective(logp_old[sl], adv[sl], 13), kl_obs=obs[sl])
        return TRPOBatch(pol, sur, damping=0.1, comm=c, ent_coef=ent_coef)

    for ent_coef in (0.0, 0.3):  # without and with an entropy bonus
        split, whole = batch(comm, mine, ent_coef), batch(parallel.Comm(), slice(0, 13), ent_coef)
        (L2, g2), (L1, g1) = split.loss_and_grad(), whole.loss_and_grad()
        assert abs(L2 - L1) < 1e-12 and rel_error(g2, g1) < 1e-12, (L2, L1, rel_error(g2, g1))
        assert rel_error(split.fvp(v), whole.fvp(v)) < 1e-12
        theta = whole.theta_old + 0.01 * v
        assert np.allclose(split.evaluate(theta), whole.evaluate(theta), rtol=1e-12, atol=0)
        split.evaluate(split.theta_old)
    # the value fit: the same Adam steps on every rank, equal to one process on the joined data
    targets = rng.standard_normal(13)
    vf2 = ValueFunction(mlp(4, (5,), 1, dtype=np.float64).init(np.random.default_rng(1)), epochs=3, minibatch=4)
    vf1 = ValueFunction(mlp(4, (5,), 1, dtype=np.float64).init(np.random.default_rng(1)), epochs=3, minibatch=4)
    s2 = vf2.fit(obs[mine], targets[mine], np.random.default_rng(2), comm=comm)
    vf1.fit(obs, targets, np.random.default_rng(2))
    assert np.isfinite(s2["vf_loss"])
    thetas = comm.gather([vf2.net.theta.copy()])
    np.testing.assert_array_equal(thetas[0], thetas[1])  # every rank holds the same V
    assert abs(explained_variance(vf2.predict(obs[mine]), targets[mine], comm)
               - explained_variance(vf2.predict(obs), targets)) < 1e-12


def sums(comm):
    """comm.sum adds the ranks' values in rank order, so both of its algorithms (one Allgather for
    small arrays, reduce-scatter + Allgatherv for large ones) give the same bits on every rank."""
    rng = np.random.default_rng(7 + comm.rank)
    cases = [np.float64(rng.standard_normal()), np.int64(3), rng.standard_normal((3, 5)),
             rng.standard_normal(10_001).astype(np.float32), rng.standard_normal((40_000,))]
    for x in cases:
        mine = np.asarray(x)
        parts = comm.gather([mine])
        expected = parts[0] + parts[1]
        for limit in (0, 1 << 40):  # 0: reduce-scatter whenever the array has >= 4 values per rank
            comm.SCATTER_BYTES = limit
            got = comm.sum(x)
            assert np.asarray(got).dtype == mine.dtype and np.shape(got) == mine.shape
            np.testing.assert_array_equal(got, expected)
            every = comm.gather([np.asarray(got)])
            np.testing.assert_array_equal(every[0], every[1])


def normalizer(comm):
    """The merged moments of both ranks' data equal one RunningMeanStd over the concatenation."""
    rng = np.random.default_rng(5)
    parts = [rng.normal(1.0, 3.0, (50, 4)), rng.normal(-2.0, 0.5, (70, 4)), rng.normal(0.3, 1.0, (40, 4))]
    merged, one = RunningMeanStd((4,)), RunningMeanStd((4,))
    merged.update(parts[0])  # the same history on both, then a batch split over the ranks
    one.update(parts[0])
    merged.update(parts[1 + comm.rank], comm)
    one.update(np.concatenate(parts[1:]))
    assert merged.count == one.count == 160
    assert np.allclose(merged.mean, one.mean, rtol=1e-12) and np.allclose(merged.var, one.var, rtol=1e-12)


def vine_batch(comm):
    """A 2-rank vine batch (CartPole: discrete actions, so π's rounding on blocks changes none)
    has the rollout set, actions and Q̂ of the 1-rank batch, and the same standardized Q̂
    differences (scaled over both ranks)."""
    from trpo_np.config import Config
    from trpo_np.train import Trainer
    from trpo_np.vine import standardized_differences

    def batch(c, ranks):
        cfg = Config(env="CartPole-v1", method="vine", num_envs=4, ranks=ranks, vine_states=30, vine_actions=2,
                     vine_horizon=10, seed=3, eval_every=0)
        tr = Trainer(cfg, None, quiet=True, comm=c)
        sampler = tr.make_sampler()
        try:
            return sampler.sample(1500)
        finally:
            sampler.close()

    two = batch(comm, 2)
    obs2, q2 = np.array(comm.gather(list(two.obs_n))), np.array(comm.gather(list(two.q_nk)))
    adv2 = np.array(comm.gather(list(standardized_differences(two.q_nk, comm))))  # scaled over both ranks
    steps2 = int(comm.sum(two.branch_steps))
    if comm.rank == 0:
        one = batch(parallel.Comm(), 1)
        # the rollout set in the one-process order is (t, e) order; the ranks list theirs by block
        key1 = [tuple(np.round(o, 6)) for o in one.obs_n]
        key2 = [tuple(np.round(o, 6)) for o in obs2]
        assert sorted(key1) == sorted(key2) and len(key1) == 30
        order1, order2 = np.argsort([str(k) for k in key1]), np.argsort([str(k) for k in key2])
        np.testing.assert_allclose(one.q_nk[order1], q2[order2], rtol=1e-5)
        np.testing.assert_allclose(standardized_differences(one.q_nk)[order1], adv2[order2], rtol=1e-5, atol=1e-9)
        assert steps2 == one.branch_steps > 0


if __name__ == "__main__":
    comm = parallel.world()
    assert comm.size == 2, "run under mpiexec -n 2"
    check = sys.argv[1]
    try:
        {"trpo_batch_sums": trpo_batch_sums, "sums": sums, "normalizer": normalizer, "vine_batch": vine_batch}[check](comm)
    except BaseException:
        import traceback

        traceback.print_exc()
        comm.abort(1)
    comm.gather([])  # both ranks are done
    if comm.rank == 0:
        print(f"ok {check}", flush=True)

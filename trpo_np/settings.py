"""Per-environment settings: the table that ``Config.for_env`` applies over the MuJoCo defaults,
and a table of the vine's own settings that ``make_config`` applies over it for ``--method vine``.

An entry is matched by the env's name without its version (``Swimmer-v4`` and ``Swimmer-v5``
both match ``Swimmer``); every Atari id (``ALE/Pong-v5``, ``PongNoFrameskip-v4``) matches
``Atari``. A flag given on the command line overrides the table; ``run.py`` prints the entry it
used, and the values end up in ``config.json`` like every other setting. The reason for each
entry is given beside it (and in the README's table). No entry is tuned to a seed.

References:
    Schulman et al. (2015), Trust Region Policy Optimization, arXiv 1502.05477, Sec. 8.2, App. C, App. E (Table 3).
    RL Baselines3 Zoo, hyperparams/trpo.yml (tuned TRPO settings for sb3-contrib's TRPO).
"""

from __future__ import annotations

import copy
import re

from .atari import is_atari_id

# name: (settings, reason)
TABLE = {
    "Swimmer": (
        dict(gamma=0.9999, cg_iters=25, vf_epochs=20, ent_coef=0.01, vine_states=50, vine_horizon=25),
        "the swimmer's forward reward accrues slowly over a 1,000-step episode: with γ = 0.99 "
        "(a 100-step horizon) it learns a wiggle that reaches ~100; γ = 0.9999 as the RL-zoo. "
        "CG steps and value-fit epochs as the RL-zoo (315.8 ± 80.5 against 274.5 ± 100.8, 5 seeds, "
        "1M steps). An entropy bonus of 0.01 (not in the paper, --ent-coef): without it one or two "
        "seeds in five (3 of the 10 runs measured) settled on a slow gait at ~150 while their "
        "entropy fell to -0.15; with it the entropy stays near 2 and every seed reaches 355-361 "
        "(5 seeds, 1M steps; see bench/README.md). The vine: N = 50 states with branches of T = 25 "
        "(7,500 steps per iteration), not the default N = 125, T = 6: with γ = 0.9999 a short branch "
        "holds little of the slow forward reward and its Q̂ differences are mostly V's; with T = 12 "
        "one seed in five stayed at the ~150 gait in each of six arms (309.8 ± 82.1), with T = 25 "
        "none of 10 runs did (329.1 ± 24.6 and 327.4 ± 29.8: 0.92 of single path over the 10); "
        "measured again on 2026-12-07 on another machine (the same code, the same iterations up to "
        "the machine's rounding): one of ten did, 313.6 (0.88)",
    ),
    "Walker2d": (
        dict(cg_iters=25, vf_epochs=20),
        "CG steps and value-fit epochs as the RL-zoo: 4,412.3 ± 452.8 (worst seed 3,880.6, last 5 "
        "evaluations 4,169.2) against 3,905.5 ± 758.9 (worst 2,856.0, last 5 3,182.2) with 10 and "
        "10 (5 seeds, 1M steps); measured again on another machine: 4,764.3 ± 382.7. δ = 0.02 "
        "instead gave 3,871.0 ± 878.1; over the entry, δ = 0.015, λ = 0.97 and 40 value-fit epochs "
        "did worse (3,954.8, 4,300.0, 3,704.8). Hopper did not gain from the same change "
        "(2,268.9 ± 816.6 against 2,483.9 ± 867.5)",
    ),
    "Hopper": (
        dict(gamma=0.995),
        "with γ = 0.99 one or two seeds in five passed 3,400 and then fell back to 1,000-1,500 "
        "(2,483.9 ± 867.5, worst 1,421.7; a stochastic policy that hops fast and falls after ~350 "
        "steps); with γ = 0.995 (a ~200-step horizon, in which a fall costs more) every seed holds "
        "its gait: 3,456.3 ± 176.6, worst 3,275.1, last 5 evaluations 3,437.8 (5 seeds, 1M steps; "
        "measured again: 3,616.3 ± 35.9). "
        "25 CG steps and 20 value-fit epochs did not help Hopper (2,268.9 ± 816.6)",
    ),
    "Ant": (
        dict(log_std_init=-1.0, max_kl=0.02, cg_iters=25, vf_epochs=20),
        "with σ = 1 at the start the control cost (0.5 |a|², ~2.4 a step) outweighs the survival "
        "reward (1 a step), and the ant learned to end its episodes (eval 23-46 at 250k-450k "
        "steps); σ = e^-1 costs ~0.55 a step. With δ = 0.01 every step was accepted whole and "
        "the return still rose at 1M steps (2,701); δ = 0.02: 4,008 and 3,668 (seeds 0, 1). CG "
        "steps and value-fit epochs as the RL-zoo",
    ),
    "Humanoid": (
        dict(log_std_init=-1.0),
        "its actions lie in [-0.4, 0.4]: with σ = 1 at the start most sampled actions are clipped "
        "(1M steps, seeds 0-2: 564.5 ± 54.8, best 610.4, entropy still 22.8 of ~24 at the end); "
        "σ = e^-1 (about the half-range): 704.1 and 822.4 on seeds 0 and 1 (last 5 evaluations "
        "627.8 and 788.8 against at most 542.3), by the rule fixed before the run (both seeds above "
        "every default seed); seeds 2-4 measured again: 694.7, 661.1, 851.9, so 746.8 ± 75.7 over "
        "five seeds (last 5 evaluations 713.0). None walks in 1M steps",
    ),
    "CartPole": (
        dict(steps=100_000, eval_every=10_000),
        "solved (500) within 100,000 steps by every measured seed; 1M steps would waste 90%",
    ),
    "InvertedPendulum": (
        dict(steps=200_000, eval_every=10_000),
        "solved (1,000, the most an episode can score) by 30,000 steps on every seed of five, and "
        "still 1,000 on each at 200,000; with the default 1M steps every seed was at 1,000 from the "
        "first evaluation (51,200 steps) to 550k, and then three of five fell back at times (one to "
        "26-37 for 150k steps; final 974.3 ± 51.4): the extra 800k steps cost time and stability",
    ),
    "InvertedDoublePendulum": (
        dict(train_horizon=200),
        "every seed balances to the 1,000-step limit by 100k steps, but a 2,048-step batch of "
        "1,000-step episodes holds about two episode starts, and the policies kept failing at "
        "some starts (the defaults' seed 4 lost 10 of 40 start states, each within 30 steps; "
        "final evaluations 8,067.0 ± 939.4, last 5 7,850.2; γ = 0.995: 8,606.7 and 8,652.9). "
        "Training episodes cut at 200 steps (a time limit, bootstrapped with V) give ~10 starts per "
        "batch: 9,165.9 ± 365.4, last 5 9,122.5 (5 seeds, 1M steps; 9 of 200 starts lost), by the "
        "rule fixed before the run; seeds 5-9: 9,174.5 against the defaults' 7,576.9. Evaluations play "
        "the whole 1,000 steps",
    ),
    # Paper Sec. 8.2 and App. C: δ = 0.01, γ = 0.99, F on 10% of the states; scaled to a 2-core
    # machine: 5,000 steps per iteration instead of the paper's 100,000, one value-fit epoch.
    # CG damping: the default 0.1, measured against 1e-3 in bench/README.md, "Atari settings"
    # (bench/atari_settings.py, bench/atari_table.py, bench/linesearch.py, bench/damping.py).
    "Atari": (
        dict(batch_steps=5_000, num_envs=8, lam=0.95, fvp_fraction=0.1, vf_epochs=1, vf_minibatch=256,
             eval_every=250_000, eval_episodes=3, steps=10_000_000, atari={"frame_size": 42}, vine_states=50,
             vine_horizon=25),
        "the paper's Atari settings (δ = 0.01, F on 10% of the states, CNN) scaled to 2 cores: "
        "5,000 steps per iteration, 42×42 frames (84×84 on Breakout, seed 0, 2 hours: 1M steps, "
        "2.7 ± 4.1, against 42×42's 3M steps, 4.3 ± 3.1, and behind at equal steps too), one value-fit "
        "epoch. CG damping 0.1, as MuJoCo: "
        "1e-3 (OpenAI baselines' Atari value) was better on Breakout (1M steps: 5.0 and 16.6 against "
        "2.7 and 1.3 on seeds 0 and 1; with 0.1, 70 of 200 iterations of seed 0 took no step) but "
        "worse on Pong (2 hours, seed 0: 6.0 ± 4.9 after 3.2M steps against 17.2 ± 1.5 after 3.6M) "
        "and Seaquest (1M, seed 0: 468.0 against 674.0); `--damping 1e-3` stays the measured choice "
        "for Breakout. The vine: N = 50 states, branches of T = 25, with which its Breakout run was "
        "measured (the default N = 125, T = 6 was measured on MuJoCo only)",
    ),
}


# Settings of the vine sampler alone (``--method vine``), applied over the env's entry; a flag
# overrides them too. name: (settings, reason).
VINE_TABLE = {
    "Walker2d": (
        dict(max_kl=0.02),
        "the vine with δ = 0.01 does not learn Walker2d in 1M steps (983.2 ± 497.5 on seeds 0-4, "
        "823.3 ± 105.8 on seeds 5-9); with δ = 0.02, 2,628.4 ± 1,436.0 and 1,603.6 ± 1,140.5 (four "
        "of ten seeds walk), by a rule fixed before the second measurement (its mean final and "
        "last-5 evaluations both above δ = 0.01's). Still 0.46 of single path's 4,588.3: single path "
        "is the sampler for Walker2d. Single path did worse with δ = 0.02 (3,871.0 against 4,412.3) "
        "and Hopper's vine did not gain from it (3,290.1 against 3,390.5)",
    ),
}


def table_name(env_id: str) -> str:
    """The table key for a gymnasium id: ``Atari`` for ALE ids, else the name without its
    namespace and version (``Walker2d-v5`` -> ``Walker2d``)."""
    if is_atari_id(env_id):
        return "Atari"
    return re.sub(r"-v\d+$", "", env_id.split("/")[-1])


def env_settings(env_id: str, table: dict = TABLE) -> dict:
    """``table``'s settings for ``env_id`` (a copy; empty when the table has no entry)."""
    entry = table.get(table_name(env_id))
    return copy.deepcopy(entry[0]) if entry else {}


def vine_settings(env_id: str) -> dict:
    """The vine-only settings for ``env_id`` (:data:`VINE_TABLE`)."""
    return env_settings(env_id, VINE_TABLE)


def describe(cfg) -> str:
    """One line saying which table settings a run uses, which of them the method's own rules
    replaced (the vine's, in :func:`trpo_np.config.make_config`) and which a flag replaced."""
    from .config import make_config  # config imports this module

    name, settings = table_name(cfg.env), env_settings(cfg.env)
    vine = vine_settings(cfg.env) if cfg.method == "vine" else {}
    if not settings and not vine:
        return f"settings: no entry for {cfg.env} in trpo_np/settings.py, the defaults"
    rules = make_config(cfg.env, method=cfg.method)  # the table and the method's rules, no flags
    used = []
    for key, value in settings.items():
        mine, ruled = getattr(cfg, key), getattr(rules, key)
        if key == "atari":  # flags may add keys (sticky actions, ...) or change some
            mine = {k: mine[k] for k in value if k in mine}
        text = f"{key}={value}" if ruled == value else f"{key}={value} ({cfg.method}: {ruled})"
        used.append(text if mine == ruled else f"{text} (flag: {getattr(cfg, key)})")
    for key, value in vine.items():
        if key not in settings:  # else said above, as the method's value
            text = f"{key}={value} (vine)"
            used.append(text if getattr(cfg, key) == value else f"{text} (flag: {getattr(cfg, key)})")
    return f"settings: entry {name!r} of trpo_np/settings.py: " + ", ".join(used)

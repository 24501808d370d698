"""Atari: preprocessing faces, A2C / MGRL end to end, the MGRL meta-gradient, the bias bench."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metagrad.agents.a2c import A2CAgent, A2CConfig, ActorCritic, Rollout, a2c_loss, mlp_torso
from metagrad.agents.mgrl import META_NAMES, MGRLAgent, MGRLConfig, inner_step, meta_gradient, meta_values
from metagrad.app.cli import main
from metagrad.app.runner import cell_from_row, run_bench
from metagrad.app.suites.atari import AtariBenchConfig
from metagrad.envs.atari import AtariConfig, AtariVector, rom_id

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize("backend", ["ale", "gymnasium"])
def test_preprocessed_observations_rewards_and_flags(backend):
    env = AtariVector(AtariConfig("breakout", num_envs=2, backend=backend, max_episode_frames=2_000))
    try:
        obs = env.reset(seed=0)
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == np.uint8
        rng = np.random.default_rng(0)
        lost, finished, rewards = 0, [], []
        for _ in range(700):
            step = env.step(rng.integers(0, env.num_actions, 2))
            assert step.obs.shape == (2, 4, 84, 84) and step.obs.dtype == np.uint8
            assert step.reward.dtype == np.float32 and step.terminated.dtype == bool
            np.testing.assert_array_equal(step.reward, np.sign(step.raw_reward))
            lost += int(step.life_lost.sum())
            finished += step.episode_scores
            rewards.append(step.raw_reward)
        assert lost > 0, "random play in Breakout loses lives"
        assert finished, "games end (game over or the 2,000-frame limit)"
        assert sum(finished) <= np.sum(rewards)  # scores are sums of raw rewards of finished games
    finally:
        env.close()


def test_evaluation_mode_keeps_raw_rewards_and_whole_games():
    env = AtariVector(AtariConfig("breakout", num_envs=2, training=False))
    try:
        env.reset(seed=1)
        rng = np.random.default_rng(1)
        for _ in range(200):
            step = env.step(rng.integers(0, env.num_actions, 2))
            np.testing.assert_array_equal(step.reward, step.raw_reward.astype(np.float32))
            assert not step.life_lost.any()
    finally:
        env.close()


def test_game_names_and_bad_configs():
    assert rom_id("SpaceInvaders") == rom_id("ALE/SpaceInvaders-v5") == rom_id("SpaceInvadersNoFrameskip-v4")
    assert rom_id("pong") == "pong"
    with pytest.raises(ValueError, match="unknown Atari game"):
        AtariConfig("chess")
    with pytest.raises(ValueError, match="num_envs"):
        AtariConfig("pong", num_envs=0)
    with pytest.raises(ValueError, match="backend"):
        AtariConfig("pong", backend="retro")
    with pytest.raises(ValueError, match="inner_steps"):
        MGRLConfig(inner_steps=0)
    with pytest.raises(ValueError, match="estimator: unknown"):
        MGRLConfig(estimator="magic")
    with pytest.raises(ValueError, match="outer"):
        MGRLConfig(outer="later")


# ---------------------------------------------------------------------------------------------
# The MGRL meta-gradient against finite differences (tiny network, float64)
# ---------------------------------------------------------------------------------------------


def _tiny_batch(gen: torch.Generator, T: int = 4, B: int = 3, obs_dim: int = 5, actions: int = 3) -> Rollout:
    return Rollout(
        obs=torch.randn(T, B, obs_dim, generator=gen, dtype=torch.float64),
        actions=torch.randint(0, actions, (T, B), generator=gen),
        behaviour_log_probs=torch.full((T, B), -math.log(actions), dtype=torch.float64),
        rewards=torch.randn(T, B, generator=gen, dtype=torch.float64),
        terminated=torch.rand(T, B, generator=gen) < 0.15,
        truncated=torch.zeros(T, B, dtype=torch.bool),
        bootstrap_obs=torch.randn(B, 5, generator=gen, dtype=torch.float64),
    )


@pytest.mark.parametrize("estimator", ["pg", "lvc", "dice"])
def test_meta_gradient_of_gamma_through_one_inner_step_matches_finite_differences(estimator):
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    torso, dim = mlp_torso(5, hidden=6)
    # a critic not conditioned on gamma: the bootstrap targets are semi-gradients (cut from the
    # graph, as in TD learning), so gamma must reach the loss only through the returns for the
    # total derivative to be the meta-gradient
    model = ActorCritic(torso, dim, 3, gamma_input=False, obs_dims=1).double()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    inner, outer = _tiny_batch(gen), _tiny_batch(gen)
    # a fixed preconditioner (rms_alpha = 1) and no clipping: the inner step is a smooth function of eta
    a2c = A2CConfig(num_envs=3, lr=0.05, rms_alpha=1.0, max_grad_norm=1e6)
    rms = {n: torch.full_like(p, 0.3) for n, p in params.items()}
    config = MGRLConfig(a2c, inner_steps=1, estimator=estimator, learn_coefs=True)
    base = {"gamma": 1.2, "lambda": 0.7, "value_coef": 0.1, "entropy_coef": -0.2}
    eta = {n: torch.tensor(base[n], dtype=torch.float64, requires_grad=True) for n in META_NAMES}
    batches = [inner, outer]
    grads, *_ = meta_gradient(model, params, eta, lambda k, _theta: batches[k], dict(rms), config)

    def theta_prime(name: str, value: float) -> dict[str, torch.Tensor]:
        """theta' = theta - alpha P grad L_in(theta, eta) for a perturbed meta-parameter."""
        e = {n: torch.tensor(value if n == name else base[n], dtype=torch.float64) for n in META_NAMES}
        with torch.enable_grad():
            theta = {n: p.clone().requires_grad_(True) for n, p in params.items()}
            theta, _ = inner_step(model, theta, inner, meta_values(e, a2c), dict(rms), a2c, estimator)
        return {n: p.detach() for n, p in theta.items()}

    # the outer gradient at theta' (what the outer surrogate estimates), then the chain rule with
    # the Jacobian d theta' / d eta by float64 central differences
    leaf = {n: p.requires_grad_(True) for n, p in theta_prime("gamma", base["gamma"]).items()}
    outer_loss = a2c_loss(model, leaf, outer, 0.99, 0.95, estimator="pg", value_coef=0.0, entropy_coef=0.0)
    outer_grad = dict(zip(leaf, torch.autograd.grad(outer_loss, list(leaf.values())), strict=True))
    for name in META_NAMES:
        eps = 1e-6
        plus, minus = theta_prime(name, base[name] + eps), theta_prime(name, base[name] - eps)
        fd = sum((outer_grad[n] * (plus[n] - minus[n]) / (2 * eps)).sum() for n in params)
        assert grads[name].item() == pytest.approx(float(fd), rel=1e-5, abs=1e-12), name
    assert abs(grads["gamma"].item()) > 1e-6  # gamma really reaches the outer loss


def test_pg_and_lvc_meta_gradients_agree_for_one_inner_step_and_differ_for_two():
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    torso, dim = mlp_torso(5, hidden=6)
    model = ActorCritic(torso, dim, 3, obs_dims=1).double()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    batches = [_tiny_batch(gen) for _ in range(3)]
    out = {}
    for k in (1, 2):
        for est in ("pg", "lvc"):
            eta = {n: torch.tensor(0.5, dtype=torch.float64, requires_grad=True) for n in META_NAMES[:2]}
            rms = {n: torch.zeros_like(p) for n, p in params.items()}
            cfg = MGRLConfig(A2CConfig(num_envs=3, lr=0.05), inner_steps=k, estimator=est)
            out[k, est] = meta_gradient(model, params, eta, lambda i, _t: batches[i], rms, cfg)[0]["gamma"]
    torch.testing.assert_close(out[1, "pg"], out[1, "lvc"])
    assert not torch.allclose(out[2, "pg"], out[2, "lvc"])


# ---------------------------------------------------------------------------------------------
# Agents end to end
# ---------------------------------------------------------------------------------------------


def test_mgrl_runs_on_real_frames_and_moves_its_meta_parameters():
    torch.set_num_threads(1)
    env_config = AtariConfig("breakout", num_envs=2)
    agent = MGRLAgent(MGRLConfig(A2CConfig(num_envs=2), meta_lr=0.05), env_config, seed=0)
    try:
        start = agent.meta_parameters()
        out = agent.train(400)
        end = agent.meta_parameters()
    finally:
        agent.close()
    assert out["frames"] >= 400
    assert end["gamma"] != start["gamma"] and end["lambda"] != start["lambda"]
    assert all(math.isfinite(v) for v in end.values())


@pytest.mark.parametrize("outer", ["fresh", "replay"])
def test_agents_are_seeded(outer):
    env_config = AtariConfig("breakout", num_envs=2)
    runs = []
    for _ in range(2):
        agent = MGRLAgent(MGRLConfig(A2CConfig(num_envs=2), outer=outer), env_config, seed=3)
        try:
            agent.train(200)
            runs.append(
                ({n: v.detach().clone() for n, v in agent.eta.items()}, agent.params["policy.weight"].clone())
            )
        finally:
            agent.close()
    assert all(torch.equal(runs[0][0][n], runs[1][0][n]) for n in runs[0][0])
    assert torch.equal(runs[0][1], runs[1][1])
    a2c = []
    for _ in range(2):
        agent = A2CAgent(A2CConfig(num_envs=2), env_config, seed=4)
        try:
            agent.train(160)
            a2c.append(agent.model.policy.weight.detach().clone())
        finally:
            agent.close()
    assert torch.equal(a2c[0], a2c[1])


def test_compare_atari_cli(tmp_path, capsys):
    out = tmp_path / "atari"
    code = main(
        [
            "compare",
            "atari",
            "--games",
            "breakout",
            "--agents",
            "sb3_a2c,a2c,mgrl_lvc",
            "--frames",
            "240",
            "--n",
            "2",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    for name in (
        "atari_compare.jsonl",
        "atari_compare_curves.csv",
        "atari_compare.md",
        "atari_compare_breakout.png",
    ):
        assert (out / name).exists(), name
    assert "mgrl_lvc" in capsys.readouterr().out


def test_atari_bias_bench_rows(tmp_path):
    config = AtariBenchConfig(
        preset="tiny", num_envs=2, n_steps=3, estimators=("pg", "lvc"), repeats=2, reference_repeats=2,
        reference_scale=1,
    )  # fmt: skip
    rows = run_bench(
        [("atari", config)], tmp_path / "rows.jsonl", backend="serial", progress=False, log=print
    )
    rows = rows[("atari", "tiny")]
    assert [r.estimator for r in rows] == ["pg", "lvc"]
    for r in rows:
        assert {"corr", "bias_debiased", "bias_ci_low", "mse", "reference_se", "git_commit"} <= set(
            r.to_json()
        )
        assert len(r.get("reference")) == 4 and r.get("reference_se") > 0
        suite, cfg, cell = cell_from_row(r)
        assert suite == "atari" and cell.key(cfg) == r.cell_id
    with pytest.raises(ValueError, match="unknown env"):
        AtariBenchConfig(env="ALE/Chess-v5")

"""Atari: preprocessing faces, A2C / MGRL end to end, the MGRL meta-gradient, the bias bench."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from metagrad.agents.a2c import A2CAgent, A2CConfig, ActorCritic, Rollout, a2c_loss, mlp_torso
from metagrad.agents.mgrl import (
    META_NAMES,
    MGRLAgent,
    MGRLConfig,
    initial_meta_parameters,
    inner_step,
    meta_gradient,
    meta_values,
    paired_meta_gradients,
)
from metagrad.app.cli import main
from metagrad.app.running.runner import cell_from_row, run_bench
from metagrad.app.suites.atari import (
    AtariBenchConfig,
    lvc_vs_pg,
    paired_statistics,
    write_figures,
    write_summary,
)
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


def _tiny_agent(seed: int) -> tuple[ActorCritic, dict[str, torch.Tensor], torch.Generator]:
    """A tiny float64 actor-critic on 5-dimensional observations, its parameters and a generator."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    torso, dim = mlp_torso(5, hidden=6)
    model = ActorCritic(torso, dim, 3, obs_dims=1).double()
    return model, {n: p.detach().clone() for n, p in model.named_parameters()}, gen


def test_pg_and_lvc_meta_gradients_agree_for_one_inner_step_and_differ_for_two():
    model, params, gen = _tiny_agent(1)
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
            "--num-envs",
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


def test_paired_meta_gradients_share_batches_and_differ_only_through_the_hessian():
    model, params, gen = _tiny_agent(2)
    batches = [_tiny_batch(gen) for _ in range(3)]
    rms = {n: torch.zeros_like(p) for n, p in params.items()}
    calls = []

    def next_batch(k, _theta):
        calls.append(k)
        return batches[k]

    for k in (1, 2):
        calls.clear()
        cfg = MGRLConfig(
            A2CConfig(num_envs=3, lr=0.05), inner_steps=k, estimator="loaded_dice", policy_lambda=1.0
        )
        grads, gaps = paired_meta_gradients(model, params, next_batch, rms, cfg, ("pg", "lvc", "dice"))
        assert calls == list(range(k + 1)), "only the reference plays; the others replay its batches"
        assert gaps["pg"] < 1e-9 and gaps["lvc"] < 1e-9  # the same first-order update: same iterates
        assert gaps["dice"] > 1e-3  # no critic: another first-order update, flagged
        # the same as meta_gradient on the same batches
        alone = meta_gradient(
            model, params, initial_meta_parameters(dataclasses.replace(cfg, estimator="lvc")),
            lambda i, _t: batches[i], dict(rms), dataclasses.replace(cfg, estimator="lvc"),
        )[0]  # fmt: skip
        for name in META_NAMES[:2]:
            torch.testing.assert_close(grads["lvc"][name], alone[name])
        same = all(
            torch.allclose(grads[e][n], grads["loaded_dice"][n], rtol=1e-9, atol=1e-15)
            for e in ("pg", "lvc")
            for n in META_NAMES[:2]
        )
        assert same == (k == 1), "K = 1: first derivatives only (all agree); K = 2: the Hessians differ"


def test_policy_lambda_sets_the_policy_advantages_only():
    model, params, gen = _tiny_agent(4)
    params = {n: p.requires_grad_(True) for n, p in params.items()}
    batch = _tiny_batch(gen)

    def grads(**kw):
        loss = a2c_loss(model, params, batch, 0.9, **kw)
        return torch.autograd.grad(loss, list(params.values()))

    # value_coef = 0: the policy and entropy terms only, so advantage_lambda=1 is lam=1
    for a, b in zip(
        grads(lam=0.5, advantage_lambda=1.0, value_coef=0.0), grads(lam=1.0, value_coef=0.0), strict=True
    ):
        torch.testing.assert_close(a, b)
    # with the value term: the value targets keep lam
    assert not all(
        torch.allclose(a, b)
        for a, b in zip(grads(lam=0.5, advantage_lambda=1.0), grads(lam=1.0), strict=True)
    )
    with pytest.raises(ValueError, match="policy_lambda"):
        MGRLConfig(policy_lambda=1.5)


def test_paired_statistics_keep_their_level_and_find_a_real_bias():
    gen = torch.Generator().manual_seed(0)
    false_alarms = sum(
        paired_statistics(torch.randn(48, 4, generator=gen, dtype=torch.float64))["resolved"]
        for _ in range(400)
    )
    # family-wise level 0.05 (Bonferroni: at most 0.05); 3 binomial standard errors of slack
    assert false_alarms / 400 <= 0.05 + 3 * math.sqrt(0.05 * 0.95 / 400)
    shifted = torch.randn(48, 4, generator=gen, dtype=torch.float64) + torch.tensor([0.0, 1.0, 0.0, 0.0])
    out = paired_statistics(shifted)
    assert out["resolved"] and out["resolved_components"] == ["lambda"]
    assert out["ci_low"][1] > 0 and out["ci_low"][0] < 0 < out["ci_high"][0]


def test_lvc_vs_pg_verdicts():
    gen = torch.Generator().manual_seed(1)
    bias = torch.tensor([1.0, -0.5, 0.0, 0.2], dtype=torch.float64)
    pg = bias + 0.3 * torch.randn(64, 4, generator=gen, dtype=torch.float64)
    smaller = 0.3 * bias + 0.3 * torch.randn(64, 4, generator=gen, dtype=torch.float64)
    assert lvc_vs_pg(pg, smaller)["verdict"] == "LVC smaller"
    assert lvc_vs_pg(smaller, pg)["verdict"] == "LVC larger"
    same = pg + 0.3 * torch.randn(64, 4, generator=gen, dtype=torch.float64)
    out = lvc_vs_pg(pg, same)
    assert out["verdict"] == "INCONCLUSIVE" and out["ci_low"] < 0 < out["ci_high"]
    # the point estimate is unbiased for ||E d_pg||^2 - ||E d_lvc||^2
    truth = float(bias @ bias - (0.3 * bias) @ (0.3 * bias))
    values = [
        lvc_vs_pg(
            bias + torch.randn(8, 4, generator=gen, dtype=torch.float64),
            0.3 * bias + torch.randn(8, 4, generator=gen, dtype=torch.float64),
            num_bootstrap=10,
        )["difference"]
        for _ in range(2000)
    ]
    assert abs(np.mean(values) - truth) < 3 * np.std(values) / math.sqrt(len(values))


def test_atari_bias_bench_rows_paired_and_reference_views(tmp_path, capsys):
    config = AtariBenchConfig(
        preset="tiny", games=("MinAtar/Breakout-v1",), num_envs=2, n_steps=3, repeats=8, ci_block=2,
        view_repeats=2, reference_repeats=2, reference_scale=1, estimators=("pg", "lvc", "dice"),
    )  # fmt: skip
    rows = run_bench([("atari", config)], tmp_path / "rows.jsonl", backend="serial", progress=False)
    rows = rows[("atari", "tiny")]
    assert [(r.experiment, r.estimator) for r in rows] == [
        ("paired", "pg"), ("paired", "lvc"), ("reference", "pg"), ("reference", "lvc"), ("reference", "dice"),
    ]  # fmt: skip
    pg, lvc = rows[0], rows[1]
    for r in (pg, lvc):
        assert r.env == "MinAtar/Breakout-v1" and r.metrics.repeats == 4  # 8 estimates in blocks of 2
        assert len(r.get("paired_blocks")) == 4 and r.get("max_iterate_gap") < 1e-6
        assert r.get("frames") == 8 * 3 * 2 * 3 and r.get("cpu_s") > 0
        low, mean, high = (np.array(r.get(k)) for k in ("paired_ci_low", "paired_mean", "paired_ci_high"))
        assert (low <= mean).all() and (mean <= high).all()
        blocks = torch.tensor(r.get("paired_blocks"), dtype=torch.float64)
        np.testing.assert_allclose(mean, blocks.mean(0).numpy())
        suite, _, cell = cell_from_row(r)
        assert suite == "atari" and cell.key == r.cell_id
    # both paired rows saw the same reference estimates (the same batches)
    assert pg.get("reference_digest") == lvc.get("reference_digest")
    assert pg.get("paired_mean") != lvc.get("paired_mean")
    for r in rows[2:]:
        assert len(r.get("reference")) == 4 and r.get("reference_se") > 0
    # same seed, same numbers (a fresh store)
    again = run_bench([("atari", config)], tmp_path / "again.jsonl", backend="serial", progress=False)
    assert [r.to_json()["paired_mean"] for r in again[("atari", "tiny")][:2]] == [
        pg.get("paired_mean"),
        lvc.get("paired_mean"),
    ]
    summary = write_summary(rows, tmp_path / "summary.md").read_text()
    assert "LVC against pg" in summary and summary.count("MinAtar/Breakout-v1") >= 6
    figures = write_figures(rows, tmp_path, "tiny")  # one per view
    assert [p.name for p in figures] == ["tiny_paired.png", "tiny_estimators.png"]
    assert ("RESOLVED" in summary) or ("INCONCLUSIVE" in summary)
    with pytest.raises(ValueError, match="unknown game"):
        AtariBenchConfig(games=("ALE/Chess-v5",))
    with pytest.raises(ValueError, match="repeats"):
        AtariBenchConfig(repeats=10, ci_block=4)
    with pytest.raises(ValueError, match="experiments"):
        AtariBenchConfig(experiments=("later",))


def test_bench_atari_cli_prints_the_summary(tmp_path, capsys):
    args = [
        "bench", "atari", "--games", "MinAtar/SpaceInvaders-v1", "--preset", "quick",
        "--estimators", "pg,lvc", "--num-envs", "2", "--experiments", "paired", "--backend", "serial",
        "--no-progress", "--store", str(tmp_path / "rows.jsonl"),
    ]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Paired view" in out and "MinAtar/SpaceInvaders-v1" in out and "LVC against pg" in out


def test_compare_below_the_first_finished_game_writes_no_nan(tmp_path, capsys):
    code = main(
        [
            "compare", "atari", "--games", "pong", "--agents", "a2c", "--frames", "160", "--num-envs", "2",
            "--out", str(tmp_path), "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    table = (tmp_path / "atari_compare.md").read_text()
    assert "no game finished" in table and "nan" not in table.lower()
    assert "nan" not in (tmp_path / "atari_compare_curves.csv").read_text().lower()
    assert "finished no game in 160 frames" in capsys.readouterr().err
    assert "NaN" not in (tmp_path / "atari_compare.jsonl").read_text()

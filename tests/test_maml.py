"""Task distributions, batched tasks, the MAML meta-learner and ``metagrad compare maml``."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from metagrad.agents.maml import MAMLConfig, MAMLLearner, train_maml
from metagrad.app.cli import main
from metagrad.app.compare.maml import MAMLCompareConfig, learner_config
from metagrad.app.perf import maml_meta_iteration_time
from metagrad.critics import CriticSpec
from metagrad.decomposed import MetaGradientSpec, episodes_per_estimate, sample_meta_gradients
from metagrad.envs.tabular import TabularTask, TaskDistribution, random_task, rollout, stack_tasks
from metagrad.estimators import dice
from metagrad.exact import lirpg_meta_gradient, maml_meta_gradient, post_adaptation_return, tabular_return
from metagrad.staged import RandomStreams, StageSpec
from metagrad.testing import central_difference, relative_error

SMALL = dict(num_states=4, num_actions=3, gamma=0.9, horizon=6, dirichlet_alpha=1.0)


def _family(kind: str = "shared_transitions") -> TaskDistribution:
    return TaskDistribution(kind, **SMALL, seed=5)


# ---------------------------------------------------------------------------------------------
# Task distributions and task batches
# ---------------------------------------------------------------------------------------------


def test_shared_transition_family_shares_p_and_varies_r():
    dist = _family()
    batch = dist.sample(5, dist.train_rng(0))
    assert batch.batch_shape == (5,) and len(batch) == 5 and batch.P.shape == (5, 4, 3, 4)
    assert torch.equal(batch.P[0], batch.P[4]) and not torch.equal(batch.R[0], batch.R[1])
    assert torch.equal(batch.P[0], dist.base_task().P)


def test_random_family_varies_transitions():
    batch = _family("random").sample(3, np.random.default_rng(0))
    assert not torch.equal(batch.P[0], batch.P[1])


def test_sampling_is_seeded_and_held_out_is_fixed_and_separate():
    dist = _family()
    a = dist.sample(4, dist.train_rng(3))
    b = dist.sample(4, dist.train_rng(3))
    c = dist.sample(4, dist.train_rng(4))
    assert torch.equal(a.R, b.R) and not torch.equal(a.R, c.R)
    assert torch.equal(dist.held_out(6).R, dist.held_out(6).R)
    assert not any(torch.equal(dist.held_out(6).R[i], a.R[j]) for i in range(6) for j in range(4))


def test_stack_and_unbind_round_trip():
    tasks = [random_task(**SMALL, seed=i) for i in range(3)]
    batch = stack_tasks(tasks)
    for t, u in zip(tasks, batch.unbind(), strict=True):
        assert torch.equal(t.P, u.P) and torch.equal(t.R, u.R) and torch.equal(t.init, u.init)
    with pytest.raises(ValueError, match="must match"):
        stack_tasks([tasks[0], random_task(5, 3, seed=0)])


def test_batched_rollout_uses_each_task_own_tables():
    dist = _family("random")
    batch = dist.sample(3, np.random.default_rng(1))
    logits = torch.randn(2, 3, 4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    traj = rollout(batch, logits, 50, generator=torch.Generator().manual_seed(2))
    assert traj.states.shape == (6, 50, 2, 3)
    task = torch.arange(3).expand_as(traj.states)
    torch.testing.assert_close(traj.rewards, batch.R[task, traj.states, traj.actions])
    # every observed transition has positive probability under its own task's P
    nxt = torch.cat([traj.states[1:], traj.final_states.unsqueeze(0)])
    assert (batch.P[task, traj.states, traj.actions, nxt] > 0).all()


def test_batched_rollout_returns_match_exact_per_task():
    batch = _family("random").sample(3, np.random.default_rng(2))
    logits = torch.randn(3, 4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    traj = rollout(batch, logits, 20_000, generator=torch.Generator().manual_seed(3))
    disc = 0.9 ** torch.arange(6, dtype=torch.float64).reshape(6, 1, 1)
    returns = (traj.rewards * disc).sum(0)  # [B, N]
    exact = tabular_return(batch, logits)
    z = (returns.mean(0) - exact) / (returns.std(0) / math.sqrt(20_000))
    assert z.abs().max() < 3.5, z  # Bonferroni over 3 tasks at 1e-3


def test_batched_exact_oracles_equal_per_task_oracles():
    batch = _family("random").sample(3, np.random.default_rng(4))
    theta = torch.randn(4, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    per_task = torch.stack([maml_meta_gradient(t, theta, 2, 1.5) for t in batch.unbind()])
    torch.testing.assert_close(maml_meta_gradient(batch, theta, 2, 1.5), per_task)
    torch.testing.assert_close(
        post_adaptation_return(batch, theta, 2, 1.5),
        torch.stack([post_adaptation_return(t, theta, 2, 1.5) for t in batch.unbind()]),
    )
    eta = torch.randn(4, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(
        lirpg_meta_gradient(batch, theta, eta, 1, 2.0),
        torch.stack([lirpg_meta_gradient(t, theta, eta, 1, 2.0) for t in batch.unbind()]),
    )


def test_mean_post_adaptation_meta_gradient_matches_finite_differences():
    batch = _family().sample(4, np.random.default_rng(5))
    theta = torch.randn(4, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    leaf = theta.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(post_adaptation_return(batch, leaf, 2, 2.0).mean(), leaf)
    fd = central_difference(lambda x: post_adaptation_return(batch, x, 2, 2.0).mean().detach(), theta)
    assert relative_error(grad, fd) < 1e-6


def test_sampled_meta_gradients_on_a_task_batch():
    batch = _family().sample(3, np.random.default_rng(6))
    theta = torch.zeros(4, 3, dtype=torch.float64)
    exact_spec = MetaGradientSpec(inner_steps=1, inner_lr=2.0)
    got = sample_meta_gradients(batch, theta, exact_spec, 2)
    torch.testing.assert_close(got, maml_meta_gradient(batch, theta, 1, 2.0).expand(2, 3, 4, 3))
    spec = MetaGradientSpec.from_combination(
        "lll", "loaded_dice", 8, inner_lr=2.0, critic=CriticSpec("learned")
    )
    est = sample_meta_gradients(batch, theta, spec, 5, generator=torch.Generator().manual_seed(0))
    assert est.shape == (5, 3, 4, 3) and torch.isfinite(est).all()


# ---------------------------------------------------------------------------------------------
# The meta-learner
# ---------------------------------------------------------------------------------------------


def _config(spec: MetaGradientSpec | None = None, **kwargs) -> MAMLConfig:
    spec = MetaGradientSpec(inner_steps=1, inner_lr=2.0) if spec is None else spec
    return MAMLConfig(spec=spec, **{"meta_batch": 6, "lr": 0.2, **kwargs})


def test_exact_learner_improves_held_out_post_adaptation_return():
    hist = train_maml(_config(exact=True), _family(), 30, seed=0, eval_tasks=20)
    assert hist["held_out_return"][-1] > hist["held_out_return"][0] + 0.05
    assert all(c == pytest.approx(1.0) for c in hist["cosine"])
    assert hist["episodes"] == [0] * 31


def test_all_exact_stages_learner_follows_the_exact_learner():
    dist = _family()
    exact = train_maml(_config(exact=True), dist, 8, seed=1, eval_tasks=10)
    staged = train_maml(_config(exact=False), dist, 8, seed=1, eval_tasks=10)
    torch.testing.assert_close(staged["logits"], exact["logits"], rtol=1e-10, atol=1e-10)
    assert staged["held_out_return"] == pytest.approx(exact["held_out_return"], abs=1e-10)


def test_zero_inner_steps_is_plain_policy_gradient():
    dist = _family()
    tasks = dist.sample(6, dist.train_rng(0))
    theta0 = torch.randn(4, 3, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    # exact: the mean policy gradient of the tasks
    learner = MAMLLearner(_config(MetaGradientSpec(inner_steps=0), exact=True), 4, 3, logits=theta0)
    leaf = theta0.clone().requires_grad_(True)
    (pg,) = torch.autograd.grad(tabular_return(tasks, leaf).mean(), leaf)
    torch.testing.assert_close(learner.meta_gradient(tasks, None)["logits"], pg)
    # sampled: the DiCE (= REINFORCE) gradient of the same episodes
    spec = MetaGradientSpec(inner_steps=0, outer=StageSpec("dice", 16))
    sampled = MAMLLearner(_config(spec), 4, 3, logits=theta0)
    got = sampled.meta_gradient(tasks, torch.Generator().manual_seed(3))["logits"]
    theta = theta0.expand(1, 6, 4, 3).clone().requires_grad_(True)
    streams = RandomStreams.by_role(torch.Generator().manual_seed(3))  # the sampler's own streams
    traj = rollout(tasks, theta, 16, generator=streams["outer"].trajectories)
    (manual,) = torch.autograd.grad(dice(traj.log_probs, traj.rewards, traj.discounts).mean(0).sum(), theta)
    torch.testing.assert_close(got, manual.reshape(6, 4, 3).mean(0))


def test_sampled_learner_is_seeded_and_counts_episodes():
    spec = MetaGradientSpec.from_combination("lll", "dice", 8, inner_lr=2.0)
    cfg = _config(spec)
    a = train_maml(cfg, _family(), 3, seed=2, eval_tasks=5)
    b = train_maml(cfg, _family(), 3, seed=2, eval_tasks=5)
    assert torch.equal(a["logits"], b["logits"]) and a["cosine"] == b["cosine"]
    assert cfg.episodes_per_iteration() == 6 * 3 * 8
    assert a["episodes"] == [0, 144, 288, 432]


def test_episode_accounting():
    spec = MetaGradientSpec(
        inner=StageSpec("off_policy_dice", 8, 24),
        hessian=StageSpec("lvc", 4),
        outer=StageSpec("loaded_dice", 16),
        inner_steps=2,
        critic=CriticSpec("learned", learned_episodes=10),
    )
    # every stage here uses the critic: inner 2 x (8 + 10), Jacobian 2 x (4 + 10), outer 16 + 10,
    # replay 24 (once per estimate)
    assert episodes_per_estimate(spec) == 36 + 28 + 26 + 24
    assert episodes_per_estimate(dataclasses.replace(spec, first_order=True)) == 36 + 26 + 24
    assert (
        episodes_per_estimate(dataclasses.replace(spec, critic=CriticSpec("noisy_exact"))) == 16 + 8 + 16 + 24
    )


def test_learner_with_intrinsic_reward_matches_lirpg():
    dist = _family()
    tasks = dist.sample(3, dist.train_rng(0))
    learner = MAMLLearner(_config(exact=True, learn_intrinsic_reward=True), 4, 3)
    with torch.no_grad():
        learner.params["intrinsic_reward"].add_(0.3)
    grads = learner.exact_meta_gradient(tasks)
    expect = lirpg_meta_gradient(tasks, learner.params["logits"], learner.params["intrinsic_reward"], 1, 2.0)
    torch.testing.assert_close(grads["intrinsic_reward"], expect.mean(0))
    hist = train_maml(_config(exact=True, learn_intrinsic_reward=True), dist, 3, eval_tasks=5)
    assert hist["intrinsic_reward"].abs().sum() > 0


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: MAMLConfig(meta_batch=0), "meta_batch"),
        (lambda: MAMLConfig(lr=0.0), "lr"),
        (lambda: MAMLConfig(optimizer="rmsprop"), "optimizer"),
        (lambda: MAMLConfig(spec=MetaGradientSpec(meta_parameter="intrinsic_reward")), "meta_parameter"),
        (lambda: MAMLConfig(spec="lll"), "spec"),
        (lambda: MetaGradientSpec(inner_steps=-1), "inner_steps"),
        (lambda: StageSpec("dice", 0), "n:"),
        (lambda: StageSpec("magic", 8), "estimator: unknown"),
        (lambda: TaskDistribution("chaotic"), "kind"),
        (lambda: TaskDistribution(num_states=0), "num_states"),
        (lambda: _family().sample(0, np.random.default_rng(0)), "num_tasks"),
        (lambda: MAMLCompareConfig(learners=("oracle",)), "learners"),
        (lambda: MAMLCompareConfig(n=-3), "n:"),
        (lambda: MAMLCompareConfig(inner_steps=-1), "inner_steps"),
    ],
)
def test_bad_configs_are_rejected(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_gym_env_rejects_a_task_batch():
    import gymnasium as gym

    with pytest.raises(ValueError, match="one task"):
        gym.make("MetaGrad/TabularMDP-v0", task=_family().held_out(2))
    assert isinstance(_family().held_out(2), TabularTask)


def test_compare_learner_names_map_to_specs():
    config = MAMLCompareConfig()
    assert learner_config(config, "exact").exact
    assert learner_config(config, "fomaml").spec.first_order
    assert learner_config(config, "off_policy_dice").spec.inner.replay == config.replay
    assert learner_config(config, "lvc").spec.combination == "lll"


def test_cli_compare_maml(tmp_path, capsys):
    out = tmp_path / "maml"
    code = main(
        [
            "compare",
            "maml",
            "--learners",
            "exact,dice,fomaml",
            "--seeds",
            "0,1",
            "--iterations",
            "3",
            "--meta-batch",
            "4",
            "--n",
            "4",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    for name in (
        "maml_compare.jsonl",
        "maml_compare_curves.csv",
        "maml_compare.md",
        "maml_compare_return_vs_iterations.png",
        "maml_compare_return_vs_episodes.png",
        "maml_compare_cosine.png",
    ):
        assert (out / name).exists(), name
    assert len((out / "maml_compare_curves.csv").read_text().splitlines()) == 1 + 3 * 2 * 4
    assert "fomaml" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="learners"):
        main(["compare", "maml", "--learners", "oracle"])


@pytest.mark.slow
def test_meta_iteration_speed():
    """Meta-batch 20, K = 1, 32 episodes per stage, 20 x 5 MDPs: < 50 ms per meta-iteration."""
    assert maml_meta_iteration_time()["seconds_per_iteration"] < 0.05

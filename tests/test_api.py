"""The flat public API of ``metagrad`` and the shared library pieces of the layout work: the staged
step, the generic MLMC combination, one choice check, registries, seeds kept bit-exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import metagrad
import metagrad.exact
from metagrad.agents.optim import OPTIMIZERS, check_optimizer
from metagrad.envs.ipd import GAMES, get_game, ipd_rollout
from metagrad.envs.tabular import TaskDistribution, Trajectory, random_task, rollout
from metagrad.estimators import ESTIMATORS
from metagrad.lola import LOLA_VARIANTS, get_lola_variant
from metagrad.mlmc import MLMC, randomized_mlmc
from metagrad.registry import UnknownNameError
from metagrad.staged import repeated_leaf, staged_inner_loop, staged_step
from metagrad.validation import check_choice


def test_every_built_in_estimator_is_importable_from_metagrad_and_listed():
    built_in = [name for name, info in ESTIMATORS.items() if info.fn.__module__.startswith("metagrad.")]
    assert len(built_in) >= 12
    for name in built_in:
        assert name in metagrad.__all__, f"{name} is registered but missing from metagrad.__all__"
        assert getattr(metagrad, name) is ESTIMATORS[name].fn


def test_every_oracle_and_every_listed_name_is_importable_from_metagrad():
    for name in metagrad.exact.__all__:
        assert name in metagrad.__all__, f"metagrad.exact.{name} is missing from metagrad.__all__"
        assert getattr(metagrad, name) is getattr(metagrad.exact, name)
    for name in metagrad.__all__:
        assert hasattr(metagrad, name), name
    assert len(set(metagrad.__all__)) == len(metagrad.__all__)


def test_the_flat_import_of_the_issue_works():
    from metagrad import (  # noqa: F401
        doubly_robust,
        off_policy_dice,
        register_estimator,
        score,
        stepwise_is,
        taylor1,
        taylor2,
        vtrace,
    )


# ----------------------------------------------------------------------------- the staged step


def _quadratic(scale: float):
    """``J(x) = scale * sum(x^3) / 3``: gradient ``scale x^2``, Hessian ``diag(2 scale x)``."""

    def objective(x: torch.Tensor) -> torch.Tensor:
        return scale * (x**3).sum() / 3

    return objective


def test_staged_step_takes_the_value_from_one_objective_and_the_jacobian_from_the_other():
    x0 = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    lr, a, b = 0.1, 2.0, 3.0
    x1 = staged_step(x0, lr, _quadratic(a), _quadratic(b))
    assert torch.allclose(x1, x0 + lr * a * x0**2)  # value: the first objective's step
    (jac,) = torch.autograd.grad(x1.sum(), x0)
    assert torch.allclose(jac, 1 + lr * 2 * b * x0.detach())  # derivative: the second's Jacobian

    shared = staged_step(x0, lr, _quadratic(a))  # one objective for both
    assert torch.allclose(shared, x0 + lr * a * x0**2)
    (jac,) = torch.autograd.grad(shared.sum(), x0)
    assert torch.allclose(jac, 1 + lr * 2 * a * x0.detach())

    first = staged_step(x0, lr, _quadratic(a), _quadratic(b), first_order=True)
    assert torch.allclose(first, x0 + lr * a * x0**2)
    (jac,) = torch.autograd.grad(first.sum(), x0)
    assert torch.allclose(jac, torch.ones_like(jac))  # identity Jacobian


def test_staged_inner_loop_passes_the_step_index_and_matches_repeated_steps():
    x0 = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    seen = []

    def value(step: int, x: torch.Tensor) -> torch.Tensor:
        seen.append(step)
        return (step + 1.0) * (x**2).sum()

    looped = staged_inner_loop(x0, 3, 0.1, value, lambda step, x: (x**3).sum())
    manual = x0
    for k in range(3):
        manual = staged_step(manual, 0.1, lambda x, k=k: (k + 1.0) * (x**2).sum(), lambda x: (x**3).sum())
    assert seen == [0, 1, 2]
    assert torch.equal(looped, manual)
    assert torch.equal(torch.autograd.grad(looped.sum(), x0)[0], torch.autograd.grad(manual.sum(), x0)[0])


def test_repeated_leaf_is_a_float64_leaf_per_repeat():
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3).requires_grad_(True)
    leaf = repeated_leaf(x * 2, 4)
    assert leaf.shape == (4, 2, 3) and leaf.dtype == torch.float64
    assert leaf.is_leaf and leaf.requires_grad
    leaf.sum().backward()
    assert x.grad is None  # no history back to x
    assert torch.equal(leaf[3].detach(), (x * 2).double().detach())


# ------------------------------------------------------------------------------------------ MLMC


def test_randomized_mlmc_adds_the_weighted_antithetic_difference_of_each_repeats_level():
    mlmc = MLMC(max_level=3, rate=1.0)
    repeats = 64
    plain = {"g": torch.zeros(repeats, 2, dtype=torch.float64)}
    levels_seen = {}

    def level_paths(level: int, idx: torch.Tensor):
        levels_seen[level] = idx.clone()
        ones = torch.ones(len(idx), 2, dtype=torch.float64)
        return {"g": 4.0 * level * ones}, {"g": 1.0 * ones}, {"g": 3.0 * ones}

    out = randomized_mlmc(mlmc, plain, level_paths, torch.Generator().manual_seed(0))
    levels = mlmc.sample_levels(repeats, torch.Generator().manual_seed(0))
    assert sorted(levels_seen) == sorted(set(levels.tolist()))
    for r in range(repeats):
        level = int(levels[r])
        expected = (4.0 * level - 0.5 * (1.0 + 3.0)) / mlmc.probability(level)
        assert torch.allclose(out["g"][r], torch.full((2,), expected, dtype=torch.float64))


# ------------------------------------------------------------------------- choices and registries


def test_check_choice_returns_the_value_or_names_the_argument_and_the_choices():
    assert check_choice("kind", "zero", ("noisy_exact", "zero")) == "zero"
    with pytest.raises(ValueError, match=r"kind: unknown 'c'; known: 'a', 'b'"):
        check_choice("kind", "c", ("a", "b"))
    with pytest.raises(ValueError, match="agent: unknown True; known: 1, 2"):
        check_choice("agent", True, (1, 2))  # a bool is not the integer 1
    assert check_choice("agent", 2, (1, 2)) == 2


@pytest.mark.parametrize(
    ("table", "lookup", "kind"),
    [
        (LOLA_VARIANTS, get_lola_variant, "LOLA variant"),
        (OPTIMIZERS, lambda name: OPTIMIZERS[check_optimizer(name)], "optimizer"),
        (GAMES, get_game, "game"),
    ],
)
def test_named_tables_are_registries_with_the_one_unknown_name_message(table, lookup, kind):
    for name in table:
        assert lookup(name) is table[name]
    with pytest.raises(UnknownNameError, match=rf"^{kind}: unknown name 'nope'; known: ") as err:
        lookup("nope")
    assert isinstance(err.value, ValueError)
    assert all(repr(name) in str(err.value) for name in table)


# -------------------------------------------------------------------------------------- seeding


def test_task_distribution_streams_keep_their_legacy_seeds():
    dist = TaskDistribution(num_states=4, num_actions=3, horizon=5, seed=11)
    held = dist.held_out(3)
    legacy = dist.sample(3, np.random.default_rng([11, 7_919]))
    assert torch.equal(held.R, legacy.R)
    train = dist.train_rng(5).random(4)
    assert np.array_equal(train, np.random.default_rng([11, 1, 5]).random(4))


def test_trajectory_concat_puts_episodes_side_by_side_for_both_engines():
    task = random_task(4, 3, horizon=5, dirichlet_alpha=1.0, seed=0)
    logits = torch.zeros(4, 3, dtype=torch.float64)
    parts = [rollout(task, logits, n, generator=torch.Generator().manual_seed(n)) for n in (2, 3)]
    joined = Trajectory.concat(parts)
    assert joined.num_episodes == 5 and joined.final_states.shape == (5,)
    assert torch.equal(joined.states[:, 2:], parts[1].states)
    assert Trajectory.concat(parts[:1]) is parts[0]

    theta = torch.zeros(5, dtype=torch.float64)
    games = [ipd_rollout(theta, theta, n, 4, generator=torch.Generator().manual_seed(n)) for n in (1, 2)]
    both = type(games[0]).concat(games)
    assert both.num_episodes == 3 and torch.equal(both.rewards1[:, 1:], games[1].rewards1)
    assert math.isclose(float(both.discounts[0, 0]), float(games[0].discounts[0, 0]))

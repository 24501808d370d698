"""Scale: the samplers and engines draw the exact laws, the fast exact paths equal the plain ones,
the critic shortcuts keep the critic's law, the bootstrap without resample tensors equals the
explicit one, and the runner orders, prepares and reports.

Statistical checks compare frequencies with their exact probabilities: |z| below a
Bonferroni-corrected bound at family-wise level 1e-3 (seeded, so deterministic).
"""

from __future__ import annotations

import math
import platform
import sys

import numpy as np
import pytest
import torch

from metagrad.app.cli import main
from metagrad.app.perf import (
    fitted_exponent,
    large_s_cell_time,
    reference_ipd_rollout,
    reference_tabular_rollout,
    reference_tabular_tables,
)
from metagrad.app.running.backends import configure_allocator, prepare_states, run_task
from metagrad.app.running.runner import longest_first, peak_memory_mib
from metagrad.app.suite import _RUN_STATE
from metagrad.app.suites import ipd as ipd_suite
from metagrad.app.suites import tabular as tabular_suite
from metagrad.critics import CriticSpec, critic_index
from metagrad.decomposed import MetaGradientSpec, TabularSampler
from metagrad.envs.ipd import STATE_SWAP, ipd_rollout, joint_outcome_probs
from metagrad.envs.tabular import (
    ALIAS_MAX_CATEGORIES,
    RowSampler,
    TabularTask,
    alias_table,
    random_task,
    rollout,
    stack_tasks,
)
from metagrad.envs.tabular.task import _dirichlet
from metagrad.exact import tabular_values
from metagrad.scoring import _bias_terms, score


def _z_bound(cells: int, level: float = 1e-3) -> float:
    """Two-sided normal quantile for ``level / cells`` (Bonferroni)."""
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1.0 - level / (2 * cells))))


def _max_z(counts: torch.Tensor, probs: torch.Tensor, n: int) -> float:
    """Largest |z| of the frequencies ``counts / n`` against ``probs``, row by row (``[rows, K]``,
    each row a distribution over n draws): cells expecting fewer than 20 draws are pooled into one
    cell per row, so the normal approximation holds. Cells of probability 0 must have count 0
    (checked separately)."""
    counts = counts.reshape(probs.shape[0], -1).double()
    probs = probs.reshape(probs.shape[0], -1)
    small = probs * n < 20
    cells_p = torch.cat([torch.where(small, 0.0, probs), (probs * small).sum(-1, keepdim=True)], -1)
    cells_c = torch.cat([torch.where(small, 0.0, counts), (counts * small).sum(-1, keepdim=True)], -1)
    live = (cells_p > 0) & (cells_p < 1)
    se = (cells_p * (1 - cells_p) / n).sqrt()
    return float(((cells_c / n - cells_p).abs()[live] / se[live]).max())


# ------------------------------------------------------------------------------- samplers


def _mass(threshold: torch.Tensor, alias: torch.Tensor) -> torch.Tensor:
    k = threshold.shape[-1]
    return threshold.clone().scatter_add_(-1, alias, 1.0 - threshold) / k


def test_alias_tables_hold_exactly_the_probabilities_on_hard_rows():
    """The one-pass construction reproduces every row's distribution to round-off: near-deterministic
    Dirichlet(0.001) rows of 2000 categories, one-hot rows, ties and exact zeros."""
    rng = np.random.default_rng(0)
    rows = [torch.from_numpy(_dirichlet(rng, a, (8,), 2000)) for a in (0.001, 1.0)]
    for probs in rows:
        threshold, alias = alias_table(probs)
        assert ((threshold >= 0) & (threshold <= 1)).all() and ((alias >= 0) & (alias < 2000)).all()
        assert torch.allclose(_mass(threshold, alias), probs, atol=1e-14, rtol=0)
    hand = torch.tensor(
        [
            [1.0, 0.0, 0.0, 0.0],
            [0.0, 0.0, 0.0, 1.0],
            [0.25, 0.25, 0.25, 0.25],
            [0.5, 0.5, 0.0, 0.0],
            [0.0, 0.5, 0.0, 0.5],
            [1 - 3e-13, 1e-13, 1e-13, 1e-13],
        ],
        dtype=torch.float64,
    )
    threshold, alias = alias_table(hand)
    assert torch.allclose(_mass(threshold, alias), hand, atol=1e-15, rtol=0)
    # a bucket that keeps everything aliases to itself (no draw can leave it)
    index = torch.arange(4).expand_as(alias)
    assert (alias[threshold >= 1] == index[threshold >= 1]).all()


@pytest.mark.parametrize("kind", ["alias", "search"])
@pytest.mark.parametrize("k", [5, 100])
def test_row_samplers_draw_each_row_s_law(kind, k):
    rng = np.random.default_rng(k)
    probs = torch.from_numpy(_dirichlet(rng, 0.5, (6,), k))
    probs[0] = 0.0
    probs[0, k - 1] = 1.0  # one-hot on the last category
    probs[1] = 0.0
    probs[1, :2] = 0.5  # trailing zero-probability categories
    sampler = RowSampler.build(probs, kind=kind)
    assert sampler.kind == kind
    n = 60_000
    rows = torch.arange(6).repeat_interleave(n)
    u = torch.rand(6 * n, generator=torch.Generator().manual_seed(k), dtype=torch.float64)
    draws = sampler.sample(rows, u).view(6, n)
    counts = torch.nn.functional.one_hot(draws, k).sum(1)
    assert (draws[0] == k - 1).all()
    assert (counts[probs == 0] == 0).all()
    assert _max_z(counts, probs, n) < _z_bound(6 * k)


def test_default_sampler_kind_follows_the_row_length():
    small = RowSampler.build(torch.full((2, ALIAS_MAX_CATEGORIES), 1.0 / ALIAS_MAX_CATEGORIES))
    large = RowSampler.build(torch.full((2, ALIAS_MAX_CATEGORIES + 1), 1.0 / (ALIAS_MAX_CATEGORIES + 1)))
    assert (small.kind, large.kind) == ("alias", "search")
    assert large.table.numel() == 2 * (ALIAS_MAX_CATEGORIES + 1)


# ------------------------------------------------------------------ engines vs the exact law


def _occupancy(task: TabularTask, logits: torch.Tensor) -> torch.Tensor:
    """Exact ``P(s_t = s, a_t = a)`` ``[H, S, A]`` of one policy in one task."""
    pi = torch.softmax(logits.double(), -1)
    P_pi = torch.einsum("sa,sat->st", pi, task.P)
    d, out = task.init, []
    for _ in range(task.horizon):
        out.append(d.unsqueeze(-1) * pi)
        d = d @ P_pi
    return torch.stack(out)


def _visits(states: torch.Tensor, actions: torch.Tensor, S: int, A: int) -> torch.Tensor:
    """Counts ``[H, S, A]`` of ``(t, s_t, a_t)`` over the episodes of ``[H, B]`` states/actions."""
    H = states.shape[0]
    index = (torch.arange(H).reshape(H, 1) * S + states) * A + actions
    return torch.bincount(index.reshape(-1), minlength=H * S * A).reshape(H, S, A)


@pytest.mark.parametrize(
    ("num_states", "num_actions", "dtype"),
    [(6, 3, torch.float64), (6, 3, torch.float32), (80, 2, torch.float64)],  # 80 > 64: search sampler
)
@pytest.mark.parametrize("copies", [1, 8000])  # many episodes: joint (a, s') draws; few: one by one
def test_engine_and_reference_rollouts_draw_the_exact_occupancy(num_states, num_actions, dtype, copies):
    task = random_task(num_states, num_actions, horizon=4, dirichlet_alpha=1.0, seed=5, start_state=None)
    logits = torch.randn(num_states, num_actions, generator=torch.Generator().manual_seed(1)).to(dtype)
    exact = _occupancy(task, logits)
    n = 40_000 // copies
    engine = rollout(task, logits.expand(copies, -1, -1), n, generator=torch.Generator().manual_seed(2))
    if copies == 1:
        reference = reference_tabular_rollout(
            task,
            logits,
            n * copies,
            reference_tabular_tables(task, dtype),
            generator=torch.Generator().manual_seed(3),
        )
        trajectories = [engine, reference]
    else:
        trajectories = [engine]
    bound = _z_bound(2 * exact.numel())
    for traj in trajectories:
        states, actions = traj.states.reshape(4, -1), traj.actions.reshape(4, -1)
        counts = _visits(states, actions, num_states, num_actions)
        assert (counts[exact == 0] == 0).all()
        assert _max_z(counts, exact, 40_000) < bound
        assert torch.equal(traj.rewards.reshape(4, -1), task.R.to(dtype)[states, actions])
        lp = torch.log_softmax(logits, -1)[states, actions]
        assert torch.allclose(traj.log_probs.reshape(4, -1), lp)


def test_engine_plays_a_task_batch_and_a_policy_batch_with_the_large_state_sampler():
    tasks = stack_tasks([random_task(70, 2, horizon=3, dirichlet_alpha=1.0, seed=s) for s in range(2)])
    logits = torch.randn(3, 2, 70, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    n = 20_000
    traj = rollout(tasks, logits, n, generator=torch.Generator().manual_seed(4))
    assert traj.states.shape == (3, n, 3, 2)
    cells = 0
    zs = []
    for g in range(3):
        for i, task in enumerate(tasks.unbind()):
            exact = _occupancy(task, logits[g, i])
            counts = _visits(traj.states[:, :, g, i], traj.actions[:, :, g, i], 70, 2)
            assert (counts[exact == 0] == 0).all()
            zs.append(_max_z(counts, exact, n))
            cells += exact.numel()
    assert max(zs) < _z_bound(cells)


def test_policy_draws_by_search_when_the_table_outgrows_the_draws():
    """Few episodes per policy on many states: the policy is sampled by binary search on its
    CDF instead of alias tables (same law)."""
    task = random_task(90, 3, horizon=3, dirichlet_alpha=1.0, seed=7, start_state=None)
    logits = torch.randn(90, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    copies, n = 500, 40  # S A = 270 > n H = 120: search
    traj = rollout(task, logits.expand(copies, 90, 3), n, generator=torch.Generator().manual_seed(6))
    counts = _visits(traj.states.reshape(3, -1), traj.actions.reshape(3, -1), 90, 3)
    exact = _occupancy(task, logits)
    assert (counts[exact == 0] == 0).all()
    assert _max_z(counts, exact, copies * n) < _z_bound(exact.numel())


def _outcome_law(theta1: torch.Tensor, theta2: torch.Tensor, horizon: int) -> torch.Tensor:
    """Exact ``P(outcome at step t = o)`` ``[H, 4]`` of a memory-one pair (start state 0)."""
    Q = joint_outcome_probs(theta1, theta2)
    p, out = Q[0], []
    for _ in range(horizon):
        out.append(p)
        p = p @ Q[1:]
    return torch.stack(out)


@pytest.mark.parametrize("horizon", [1, 2, 7])  # 7: a last block of one step
def test_ipd_engine_and_reference_draw_the_exact_outcome_law(horizon):
    gen = torch.Generator().manual_seed(horizon)
    theta1 = torch.randn(5, generator=gen, dtype=torch.float64)
    theta2 = torch.randn(5, generator=gen, dtype=torch.float64)
    exact = _outcome_law(theta1, theta2, horizon)
    n = 40_000
    engine = ipd_rollout(theta1, theta2, n, horizon, generator=torch.Generator().manual_seed(0))
    reference = reference_ipd_rollout(theta1, theta2, n, horizon, generator=torch.Generator().manual_seed(1))
    for traj in (engine, reference):
        outcome = 2 * traj.actions1 + traj.actions2
        counts = torch.nn.functional.one_hot(outcome, 4).sum(1)  # [H, 4]
        assert _max_z(counts, exact, n) < _z_bound(2 * exact.numel())
        assert torch.equal(traj.states[1:], 1 + outcome[:-1]) and (traj.states[0] == 0).all()
        assert torch.equal(traj.final_states, 1 + outcome[-1])
        p1 = torch.sigmoid(theta1)[traj.states]
        p2 = torch.sigmoid(theta2[list(STATE_SWAP)])[traj.states]
        lp1 = torch.where(traj.actions1 == 0, p1.log(), (1 - p1).log())
        lp2 = torch.where(traj.actions2 == 0, p2.log(), (1 - p2).log())
        assert torch.allclose(traj.log_probs1, lp1) and torch.allclose(traj.log_probs2, lp2)


def test_ipd_engine_batches_pairs_independently():
    gen = torch.Generator().manual_seed(3)
    theta1 = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    theta2 = torch.randn(3, 5, generator=gen, dtype=torch.float64)
    n, H = 30_000, 4
    traj = ipd_rollout(theta1, theta2, n, H, generator=torch.Generator().manual_seed(5))
    outcome = 2 * traj.actions1 + traj.actions2  # [H, n, 3]
    bound = _z_bound(3 * H * 4)
    for g in range(3):
        counts = torch.nn.functional.one_hot(outcome[:, :, g], 4).sum(1)
        assert _max_z(counts, _outcome_law(theta1[g], theta2[g], H), n) < bound


# --------------------------------------------------------------------------- exact values


def test_values_of_many_policies_per_task_equal_the_per_policy_recursion():
    """Policies stacked per task (the [M, S] x [S, S A] order) give the values, gradients and
    second derivatives of the per-policy P_pi recursion."""
    tasks = stack_tasks([random_task(7, 3, horizon=5, dirichlet_alpha=1.0, seed=s) for s in range(2)])
    logits = torch.randn(4, 2, 7, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    weights = torch.randn(4, 2, 6, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    leaf = logits.clone().requires_grad_(True)
    batched = tabular_values(tasks, leaf)  # 4 policies per task >= A = 3
    (g_batched,) = torch.autograd.grad((weights * batched).sum(), leaf, create_graph=True)
    (h_batched,) = torch.autograd.grad((g_batched * weights[..., 0, :].unsqueeze(-1)).sum(), leaf)
    for g in range(4):
        for i, task in enumerate(tasks.unbind()):
            one = logits[g, i].clone().requires_grad_(True)
            single = tabular_values(task, one)  # one policy: the P_pi recursion
            assert torch.allclose(single, batched[g, i], atol=1e-13, rtol=0)
            (g_one,) = torch.autograd.grad((weights[g, i] * single).sum(), one, create_graph=True)
            assert torch.allclose(g_one, g_batched[g, i], atol=1e-12, rtol=0)
            (h_one,) = torch.autograd.grad((g_one * weights[g, i, 0].unsqueeze(-1)).sum(), one)
            assert torch.allclose(h_one, h_batched[g, i], atol=1e-11, rtol=0)


@pytest.mark.parametrize("policies", [1, 4])
def test_finite_values_are_twice_differentiable(policies):
    """gradcheck / gradgradcheck of both recursions (the adjoint of the P_pi one is hand-written)."""
    task = random_task(4, 3, horizon=4, dirichlet_alpha=1.0, seed=2)
    logits = torch.randn(policies, 4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    logits.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: tabular_values(task, x), (logits,))
    assert torch.autograd.gradgradcheck(lambda x: tabular_values(task, x), (logits,))


# -------------------------------------------------------------------------------- critic


def test_critic_solves_once_per_distinct_parameters_and_noises_each_read_entry_once():
    task = random_task(30, 4, horizon=6, dirichlet_alpha=1.0, seed=1)
    spec = MetaGradientSpec.from_combination(
        "lll", "loaded_dice", 8, critic=CriticSpec(kind="noisy_exact", noise=1.0)
    )
    R = 5
    sampler = TabularSampler(task, spec, R, torch.Generator().manual_seed(0), None)
    theta = torch.randn(30, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    shared = theta.expand(R, 30, 4).clone()
    values = sampler.exact_values(shared, None)
    assert values.stride(0) == 0  # one solve for the R identical repeats
    assert torch.allclose(values, tabular_values(task, shared), atol=1e-13, rtol=0)
    assert sampler.exact_values(shared.clone(), None) is values  # the next stage at the same parameters
    distinct = shared + torch.randn(R, 1, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.allclose(sampler.exact_values(distinct, None), tabular_values(task, distinct))

    # noisy critic: V + noise * N(0, 1) * ||V_t|| / S, one normal per (repeat, step, state) entry read
    traj = rollout(task, distinct, 400, generator=torch.Generator().manual_seed(4))
    read, boot = sampler.critic(distinct, "outer", traj.states, traj.final_states)
    exact = tabular_values(task, distinct)
    index, boot_index = critic_index(exact.shape, traj.states, traj.final_states, "finite")
    flat = exact.reshape(-1)
    scale = (exact.norm(dim=-1) / 30).reshape(-1)
    assert torch.equal(boot, flat[boot_index])  # V_H = 0 has norm 0: the bootstrap stays exact
    z = (read - flat[index]) / scale[index // 30]
    entries, first = np.unique(index.reshape(-1).numpy(), return_index=True)
    same = z.reshape(-1)[torch.from_numpy(first)]
    # every visit of an entry reads the same noise
    lookup = torch.zeros(int(index.max()) + 1, dtype=torch.float64)
    lookup[torch.from_numpy(entries)] = same
    assert torch.allclose(z.reshape(-1), lookup[index.reshape(-1)], atol=1e-9)
    m = same.numel()
    assert m > 300
    assert abs(float(same.mean())) < 4 / math.sqrt(m)  # N(0, 1): mean 0, variance 1
    assert abs(float(same.var()) - 1.0) < 4 * math.sqrt(2 / m)


# ------------------------------------------------------------------------------- scoring


def test_bootstrap_from_gram_matrices_equals_explicit_resampling():
    gen = torch.Generator().manual_seed(0)
    N, R, D, B = 3, 7, 11, 50
    exact = torch.randn(N, D, generator=gen, dtype=torch.float64)
    samples = exact.unsqueeze(1) + 0.3 + torch.randn(N, R, D, generator=gen, dtype=torch.float64)
    s = score(samples, exact, num_bootstrap=B, generator=torch.Generator().manual_seed(5))
    # the same resamples, materialised
    idx = torch.randint(0, R, (B, N, R), generator=torch.Generator().manual_seed(5))
    boot = torch.gather(samples.expand(B, N, R, D), 2, idx.unsqueeze(-1).expand(B, N, R, D))
    b_bias_sq, b_var = _bias_terms(boot, exact)
    debiased = (_bias_terms(samples, exact)[0] - _bias_terms(samples, exact)[1] / R).mean()
    b_sq = (b_bias_sq - b_var / R).mean(-1)
    b_sq = b_sq - (b_sq.mean() - debiased)
    lo, hi = torch.quantile(b_sq, torch.tensor([0.025, 0.975], dtype=torch.float64)).clamp_min(0).sqrt()
    b_cos = torch.nn.functional.cosine_similarity(boot.mean(2), exact, dim=-1).mean(-1)
    assert s.bias_ci_low == pytest.approx(float(lo), rel=1e-10)
    assert s.bias_ci_high == pytest.approx(float(hi), rel=1e-10)
    assert s.variance_se == pytest.approx(float(b_var.mean(-1).std()), rel=1e-10)
    assert s.cosine_of_mean_se == pytest.approx(float(b_cos.std()), rel=1e-8)


# -------------------------------------------------------------------------------- runner


def test_cells_are_queued_longest_first_by_their_suite_s_estimate():
    config = tabular_suite.PRESETS["quick"]
    tasks = [("tabular", config, cell) for cell in tabular_suite.make_cells(config)]
    ordered = longest_first(tasks)
    costs = [tabular_suite.cell_cost(config, cell) for _, _, cell in ordered]
    assert costs == sorted(costs, reverse=True)
    assert sorted(map(id, ordered)) == sorted(map(id, tasks))
    # the cost grows with the sampled episodes and the inner steps
    by = {(c.experiment, c.n, c.spec.inner_steps): tabular_suite.cell_cost(config, c) for _, _, c in tasks}
    k = config.sweep_n_k
    assert by[("sweep_n", 64, k)] > by[("sweep_n", 4, k)]
    assert by[("sweep_k", config.comp_n, 3)] > by[("sweep_k", config.comp_n, 1)]


def test_prepared_run_state_reaches_the_cells_without_recomputing():
    config = ipd_suite.PRESETS["quick"]
    cell = next(c for c in ipd_suite.make_cells(config) if c.tags["pair_kind"] == "trained")
    states = prepare_states([("ipd", config, cell)])
    state = states[("ipd", config)]
    kinds = {*config.pair_kinds, *config.off_policy_pair_kinds}  # quick runs the off-policy experiment
    assert set(state) == {("ipd_pairs", config, kind) for kind in kinds}
    # a worker that receives the state reads these very pairs
    for key in state:
        _RUN_STATE.pop(key, None)
    marker = [{k: v.clone() for k, v in p.items()} for p in state[("ipd_pairs", config, "trained")]]
    row = run_task("ipd", config, cell, "cpu", (), {**state, ("ipd_pairs", config, "trained"): marker})
    assert ipd_suite.pairs_of(config, "trained") is marker
    assert row.metrics.repeats == config.repeats


def test_bench_prints_wall_time_summed_compute_and_peak_memory(tmp_path, capsys):
    args = ["bench", "tabular", "--preset", "quick", "--experiments", "hessian_bias", "--num-tasks", "2"]
    args += [
        "--repeats",
        "3",
        "--store",
        str(tmp_path / "rows.jsonl"),
        "--no-progress",
        "--backend",
        "serial",
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "s wall; cell compute" in out and "(sum over the cells)" in out
    assert "peak resident memory" in out
    own, _ = peak_memory_mib()
    assert 50 < own < 2048


def test_sweep_states_cells_carry_their_state_count_and_stay_out_of_the_default_presets(tmp_path):
    assert all(
        "sweep_states" not in c.experiments for n, c in tabular_suite.PRESETS.items() if n != "large_s"
    )
    config = tabular_suite.PRESETS["large_s"]
    cells = tabular_suite.make_cells(config)
    assert {c.tags["num_states"] for c in cells} == set(config.sweep_states)
    assert len({c.key for c in cells}) == len(cells)
    small = tabular_suite.TabularBenchConfig(
        preset="large_s",
        objective="finite",
        experiments=("sweep_states",),
        sweep_states=(70,),  # > 64 states: the binary-search sampler
        sweep_states_combinations=("lll",),
        sweep_states_estimators=("loaded_dice",),
        num_tasks=2,
        repeats=3,
        sweep_states_n=4,
    )
    (cell,) = tabular_suite.make_cells(small)
    row = tabular_suite.run_cell(small, cell)
    assert row.get("num_states") == 70 and row.cell_id == cell.key
    assert math.isfinite(row.metrics.mse)


def test_allocator_reuses_freed_memory_on_glibc():
    """The CLI and its workers keep mid-sized freed blocks on the heap (glibc), elsewhere no-op."""
    applied = configure_allocator()
    assert applied == (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc")


def test_fitted_exponent_recovers_a_power_law():
    sizes = [100.0, 200.0, 500.0, 1000.0]
    assert fitted_exponent(sizes, [3e-6 * s**2 for s in sizes]) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="sizes/seconds"):
        fitted_exponent([100.0, 100.0], [1.0, 2.0])


def test_large_s_cell_timing_runs_on_a_small_cell():
    """`metagrad perf --large-s` times one real tabular cell (the default run keeps it small)."""
    out = large_s_cell_time(30, n=4, num_tasks=2, repeats=4)
    assert out["num_states"] == 30
    assert out["cell_s"] > 0 and out["cell_cpu_s"] > 0 and out["tasks_s"] >= 0
    assert -1.0 <= out["corr"] <= 1.0

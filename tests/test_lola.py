"""LOLA-DiCE estimators against the exact LOLA gradient, the learners, the bench and the CLI."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch

from metagrad.agents.lola import GameConfig, LearnerConfig, play
from metagrad.app.cli import main
from metagrad.app.suites.ipd import IPDBenchConfig
from metagrad.app.suites.ipd import make_cells as make_ipd_cells
from metagrad.app.suites.ipd import run_cell as run_ipd_cell
from metagrad.critics import CriticSpec
from metagrad.exact import ipd_values, lola_gradient, naive_gradient
from metagrad.lola import LolaSpec, exact_lola_target, lola_variant, sample_lola_gradients
from metagrad.staged import StageSpec

ALPHA = 1e-3  # family-wise false-alarm rate of each statistical test


def _threshold(components: int) -> float:
    """Bonferroni-corrected two-sided normal quantile."""
    return statistics.NormalDist().inv_cdf(1 - ALPHA / (2 * components))


def _pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(5, generator=gen, dtype=torch.float64), torch.randn(
        5, generator=gen, dtype=torch.float64
    )


def _z(samples: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    se = samples.std(0) / math.sqrt(samples.shape[0])
    return (samples.mean(0) - exact) / se


COMMON = dict(gamma=0.9, horizon=15, lookahead_lr=0.5, critic=CriticSpec("noisy_exact", 0.5))


@pytest.mark.parametrize("agent", [1, 2])
def test_all_exact_stages_give_the_exact_gradient(agent):
    t1, t2 = _pair(0)
    spec = LolaSpec(agent=agent, lookahead_steps=2, **COMMON)
    got = sample_lola_gradients(t1, t2, spec, 3)
    exact = lola_gradient(t1, t2, 0.9, 0.5, 2, 15, agent=agent)
    torch.testing.assert_close(got, exact.expand(3, 5))
    torch.testing.assert_close(exact_lola_target(t1, t2, spec), exact)


@pytest.mark.parametrize(
    ("combination", "estimator"),
    [
        ("eel", "dice"),
        ("eel", "dice_baseline"),
        ("ele", "dice_baseline"),
        ("ele", "loaded_dice"),
        ("ell", "dice_baseline"),
    ],
)
def test_unbiased_stage_estimates_match_the_exact_lola_gradient(combination, estimator):
    """With the lookahead value exact, the sampled Jacobian and outer gradient are independent
    unbiased estimates, so their composition is unbiased: the z-test must pass."""
    t1, t2 = _pair(1)
    spec = LolaSpec.from_combination(combination, estimator, 32, **COMMON)
    samples = sample_lola_gradients(t1, t2, spec, 400, generator=torch.Generator().manual_seed(2))
    z = _z(samples, exact_lola_target(t1, t2, spec))
    assert z.abs().max() < _threshold(5), z


def test_off_policy_hessian_with_replay_from_an_earlier_pair_is_unbiased():
    t1, t2 = _pair(3)
    mu = (t1 + 0.1, t2 - 0.1)
    hessian = StageSpec("off_policy_dice", 16, 48)
    spec = LolaSpec(hessian=hessian, **COMMON)
    samples = sample_lola_gradients(
        t1, t2, spec, 400, generator=torch.Generator().manual_seed(4), behaviour=mu
    )
    z = _z(samples, exact_lola_target(t1, t2, spec))
    assert z.abs().max() < _threshold(5), z


@pytest.mark.parametrize("estimator", ["lvc", "pg"])
def test_low_variance_hessians_are_biased_for_lola(estimator):
    """LVC keeps only same-step cross terms, pg none: their shaping term is biased."""
    t1, t2 = _pair(1)
    spec = LolaSpec.from_combination("ele", estimator, 32, **COMMON)
    samples = sample_lola_gradients(t1, t2, spec, 200, generator=torch.Generator().manual_seed(5))
    z = _z(samples, exact_lola_target(t1, t2, spec))
    assert z.abs().max() > 3 * _threshold(5), z


def test_pg_hessian_drops_the_shaping_term_entirely():
    """pg's surrogate ``sum A_t (log pi1 + log pi2)`` has no mixed second derivative: with the
    lookahead value exact, the estimate is the partial gradient at the looked-ahead pair."""
    t1, t2 = _pair(6)
    spec = LolaSpec.from_combination("ele", "pg", 8, **COMMON)
    got = sample_lola_gradients(t1, t2, spec, 2, generator=torch.Generator().manual_seed(0))
    looked = t2 + 0.5 * naive_gradient(t1, t2, 0.9, 15, agent=2)
    partial = naive_gradient(t1, looked, 0.9, 15)
    torch.testing.assert_close(got, partial.expand(2, 5))


def test_lola_dice_with_a_large_batch_matches_the_exact_gradient():
    """The practical LOLA-DiCE (one shared lookahead batch, DiCE + baseline outer step)."""
    t1, t2 = _pair(7)
    spec = lola_variant("lola_dice", 512, 512, **COMMON)
    samples = sample_lola_gradients(t1, t2, spec, 150, generator=torch.Generator().manual_seed(8))
    z = _z(samples, exact_lola_target(t1, t2, spec))
    assert z.abs().max() < _threshold(5), z
    assert samples.std(0).max() > 0


def test_same_seed_same_estimates():
    t1, t2 = _pair(9)
    spec = lola_variant("off_policy_lola_dice", 8, 8, replay=8, **COMMON)
    a = sample_lola_gradients(t1, t2, spec, 4, generator=torch.Generator().manual_seed(1))
    b = sample_lola_gradients(t1, t2, spec, 4, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: LolaSpec(lookahead_steps=-1), "lookahead_steps"),
        (lambda: LolaSpec(gamma=1.0), "gamma"),
        (lambda: LolaSpec(game="go"), "game: unknown"),
        (lambda: LolaSpec(horizon=0), "horizon"),
        (lambda: LolaSpec(agent=0), "agent"),
        (lambda: LolaSpec(inner=StageSpec("dice", 4), shared_lookahead=True), "shared_lookahead"),
        (lambda: LolaSpec.from_combination("lxl", "dice", 4), "combination"),
        (lambda: StageSpec("dice", -4), "n:"),
        (lambda: StageSpec("dice", 4, 8), "replay"),
        (lambda: StageSpec("magic", 4), "estimator: unknown"),
        (lambda: lola_variant("lola_magic"), "variant: unknown"),
        (lambda: lola_variant("off_policy_lola_dice"), "replay"),
    ],
)
def test_bad_specs_are_rejected(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_sampler_rejects_bad_logits():
    spec = LolaSpec(**COMMON)
    with pytest.raises(ValueError, match="theta1"):
        sample_lola_gradients(
            torch.zeros(4, dtype=torch.float64), torch.zeros(5, dtype=torch.float64), spec, 2
        )
    with pytest.raises(ValueError, match="repeats"):
        sample_lola_gradients(
            torch.zeros(5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64), spec, 0
        )


# ---------------------------------------------------------------------------------------------
# Learners
# ---------------------------------------------------------------------------------------------

EXACT = dict(lookahead_lr=1.0, optimizer="sgd", lr=1.0)


def _final_mean(c1: LearnerConfig, c2: LearnerConfig, iterations: int, seeds=(0, 1, 2)) -> float:
    finals = []
    for seed in seeds:
        hist = play(c1, c2, iterations, seed=seed)
        finals.append(0.5 * (hist["reward1"][-1] + hist["reward2"][-1]))
    return sum(finals) / len(finals)


def test_exact_lola_vs_exact_lola_cooperates():
    lola = LearnerConfig("lola", "exact", **EXACT)
    assert _final_mean(lola, lola, 100) > -1.3


def test_naive_vs_naive_defects():
    naive = LearnerConfig("naive", "exact", **EXACT)
    assert _final_mean(naive, naive, 100) < -1.7


def test_updates_are_simultaneous():
    c = LearnerConfig("lola", "exact", lookahead_lr=0.5, optimizer="sgd", lr=0.2)
    t1, t2 = _pair(11)
    hist = play(c, c, 1, theta1=t1, theta2=t2, game=GameConfig(horizon=30))
    g1 = lola_gradient(t1, t2, 0.96, 0.5, 1, 30)
    g2 = lola_gradient(t1, t2, 0.96, 0.5, 1, 30, agent=2)
    torch.testing.assert_close(hist["theta1"], t1 + 0.2 * g1)
    torch.testing.assert_close(hist["theta2"], t2 + 0.2 * g2)
    v1, _ = ipd_values(t1, t2, 0.96, 30)
    assert hist["reward1"][0] == pytest.approx(float(v1) * 0.04 / (1 - 0.96**30))


@pytest.mark.parametrize("gradient", ["lola_dice", "off_policy_lola_dice", "lola_lvc"])
def test_sampled_lola_learners_run_and_are_seeded(gradient):
    c = LearnerConfig("lola", gradient, n_inner=16, n_outer=16, replay_batches=2)
    nl = LearnerConfig("naive", "lola_dice", n_outer=16)
    game = GameConfig(horizon=20)
    a = play(c, nl, 4, game=game, seed=3)
    b = play(c, nl, 4, game=game, seed=3)
    assert a["reward1"] == b["reward1"] and torch.equal(a["theta2"], b["theta2"])
    assert not torch.equal(a["path1"][0], a["theta1"])  # the learners moved
    assert a["episodes"] == [0, 48, 96, 144, 192]  # 16 shared inner + 16 outer per learner


def test_learner_config_rejects_bad_values():
    for kwargs, message in (
        ({"kind": "oracle"}, "kind"),
        ({"gradient": "magic"}, "gradient"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"lr": 0.0}, "lr"),
        ({"n_inner": 0}, "n_inner"),
    ):
        with pytest.raises(ValueError, match=message):
            LearnerConfig(**kwargs)
    with pytest.raises(ValueError, match="gamma"):
        GameConfig(gamma=1.5)


# ---------------------------------------------------------------------------------------------
# Bench and CLI
# ---------------------------------------------------------------------------------------------

TINY = dict(
    horizon=10,
    num_pairs=2,
    repeats=3,
    train_iterations=3,
    n=8,
    estimators=("dice_baseline", "lvc"),
    combinations=("ele", "lll"),
    sweep_variants=("lola_dice",),
    sweep_n=(4, 8),
    sweep_lr=(0.3,),
    sweep_steps=(1,),
    off_policy_n=4,
    off_policy_buffer=12,
    run_iterations=4,
)


def test_bench_cells_rows_and_keys():
    config = IPDBenchConfig(**TINY)
    cells = make_ipd_cells(config)
    # per pair kind: 2 x 2 decomposition + 2 sweep_n + 1 + 1; off-policy on the 'run' pairs: 5 x 2
    assert len(cells) == 2 * (4 + 2 + 1 + 1) + 10
    assert len({c.key for c in cells}) == len(cells)
    row = run_ipd_cell(config, cells[1])
    stored = row.to_json()
    for key in (
        "corr",
        "bias_debiased",
        "bias_ci_low",
        "variance",
        "mse",
        "cell_id",
        "git_commit",
        "spec",
        "config",
    ):
        assert key in stored
    assert row.bench == "ipd" and row.get("combination") == "lll" and row.metrics.num_tasks == 2
    again = run_ipd_cell(config, cells[1])
    assert again.metrics == row.metrics
    # a cell's key does not depend on the other cells of the run
    other = IPDBenchConfig(**{**TINY, "estimators": ("dice_baseline",), "sweep_n": (4, 8, 16)})
    assert cells[0].key == make_ipd_cells(other)[0].key


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"estimators": ("magic",)}, "estimator: unknown"),
        ({"n": -1}, "n:"),
        ({"lookahead_steps": -1}, "lookahead_steps"),
        ({"sweep_steps": (-1,)}, "sweep_steps"),
        ({"game": "go"}, "game: unknown"),
        ({"pair_kinds": ("adversarial",)}, "pair_kinds"),
        ({"repeats": 1}, "repeats"),
    ],
)
def test_bench_config_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        IPDBenchConfig(**kwargs)


def test_cli_bench_ipd_and_compare(tmp_path, capsys):
    out = tmp_path / "ipd.jsonl"
    code = main(
        [
            "bench",
            "ipd",
            "--preset",
            "quick",
            "--num-tasks",
            "1",
            "--repeats",
            "2",
            "--experiments",
            "decomposition",
            "--estimators",
            "lvc",
            "--store",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 * 5 and {r["pair_kind"] for r in rows} == {"random", "trained"}
    assert (tmp_path / f"{out.stem}_ipd_quick_summary.md").exists()  # named after the store

    cmp_dir = tmp_path / "cmp"
    code = main(
        [
            "compare",
            "ipd",
            "--pairings",
            "NL-NL,LOLA-DiCE",
            "--seeds",
            "0,1",
            "--iterations",
            "3",
            "--horizon",
            "10",
            "--n",
            "8",
            "--out",
            str(cmp_dir),
            "--no-progress",
        ]
    )
    assert code == 0
    for name in ("ipd_compare.jsonl", "ipd_compare_curves.csv", "ipd_compare.md", "ipd_compare_rewards.png"):
        assert (cmp_dir / name).exists(), name
    curves = (cmp_dir / "ipd_compare_curves.csv").read_text().splitlines()
    assert len(curves) == 1 + 2 * 2 * 4  # header + pairings x seeds x (iterations + 1)
    assert "LOLA-DiCE" in capsys.readouterr().out


def test_cli_rejects_bad_ipd_configs():
    with pytest.raises(SystemExit, match="unknown preset"):
        main(["bench", "ipd", "--preset", "nope"])
    with pytest.raises(SystemExit, match="estimator: unknown"):
        main(["bench", "ipd", "--estimators", "magic"])
    with pytest.raises(SystemExit, match="pairings"):
        main(["compare", "ipd", "--pairings", "LOLA-Oracle"])

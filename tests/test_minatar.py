"""MinAtar: the vector env, the small CNN agents, the comparison and the paired bias bench on a
tiny budget (the full budgets are commands, see the README)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from metagrad.agents.a2c import A2CAgent, A2CConfig, build_model
from metagrad.agents.mgrl import MGRLAgent, MGRLConfig
from metagrad.app.cli import main
from metagrad.app.perf import training_throughput
from metagrad.envs.atari import AtariConfig
from metagrad.envs.minatar import (
    GAMES,
    MinAtarConfig,
    game_config,
    is_minatar,
    minatar_game,
    minatar_gym_env,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CHANNELS = {"asterix": 4, "breakout": 4, "freeway": 7, "seaquest": 10, "space_invaders": 6}


def test_ids_and_dispatch():
    assert minatar_game("MinAtar/SpaceInvaders-v1") == ("space_invaders", True)
    assert minatar_game("MinAtar/Breakout-v0") == ("breakout", False)
    assert minatar_game("minatar:asterix") == ("asterix", True)
    assert is_minatar("MinAtar/Breakout-v1") and not is_minatar("ALE/Breakout-v5")
    assert isinstance(game_config("MinAtar/Freeway-v1", num_envs=2, backend="ale"), MinAtarConfig)
    assert isinstance(game_config("breakout", num_envs=2), AtariConfig)
    for bad in ("MinAtar/Pong-v1", "breakout-minatar"):
        with pytest.raises(ValueError, match="game"):
            MinAtarConfig(bad)
    with pytest.raises(ValueError, match="num_envs"):
        MinAtarConfig(num_envs=0)
    with pytest.raises(ValueError, match="sticky_action_prob"):
        MinAtarConfig(sticky_action_prob=1.5)


@pytest.mark.parametrize("game", GAMES)
def test_vector_env_shapes_scores_and_resets(game):
    env = MinAtarConfig(f"minatar:{game}", num_envs=3, max_episode_steps=300).make()
    obs = env.reset(seed=0)
    assert obs.shape == (3, CHANNELS[game], 10, 10) == (3, *env.obs_shape)
    assert obs.dtype == np.float32 and set(np.unique(obs)) <= {0.0, 1.0}
    rng = np.random.default_rng(0)
    running = np.zeros(3)
    for _ in range(700):
        step = env.step(rng.integers(0, env.num_actions, 3))
        running += step.raw_reward
        done = step.terminated | step.truncated
        assert not (step.terminated & step.truncated).any()
        # a finished game's score is the sum of its rewards; the next game starts from 0
        assert sorted(step.episode_scores) == sorted(running[done].tolist())
        assert all(0 < n <= 300 for n in step.episode_frames)
        running[done] = 0.0
        assert not step.life_lost.any()
    with pytest.raises(ValueError, match="actions"):
        env.step([0, 0, env.num_actions])


def test_seeding_gives_the_same_games():
    runs = []
    for _ in range(2):
        env = MinAtarConfig("MinAtar/Breakout-v1", num_envs=2).make()
        obs = [env.reset(seed=5)]
        rng = np.random.default_rng(1)
        obs += [env.step(rng.integers(0, env.num_actions, 2)).obs for _ in range(100)]
        runs.append(np.stack(obs))
    np.testing.assert_array_equal(runs[0], runs[1])


def test_gymnasium_env_matches_the_vector_env():
    config = MinAtarConfig("MinAtar/Asterix-v1", num_envs=1)
    env = minatar_gym_env(config)
    obs, _ = env.reset(seed=3)
    vec = config.make()
    np.testing.assert_array_equal(obs, vec.reset(seed=3)[0])
    assert env.observation_space.shape == obs.shape == vec.obs_shape
    assert env.action_space.n == vec.num_actions
    rng = np.random.default_rng(2)
    for _ in range(50):
        a = int(rng.integers(vec.num_actions))
        obs, reward, terminated, _, _ = env.step(a)
        step = vec.step([a])
        if terminated:
            break
        np.testing.assert_array_equal(obs, step.obs[0])
        assert reward == step.raw_reward[0]


def test_small_cnn_for_minatar_grids():
    model = build_model(5, seed=0, obs_shape=(6, 10, 10))
    logits, value = model(torch.zeros(3, 6, 10, 10), 0.99)
    assert logits.shape == (3, 5) and value.shape == (3,)
    assert sum(p.numel() for p in model.parameters()) < 200_000  # the MinAtar network, not the Nature CNN
    with pytest.raises(ValueError, match="obs_shape"):
        build_model(5, seed=0, obs_shape=(4, 32, 32))


def test_agents_train_and_are_seeded_on_minatar():
    torch.set_num_threads(1)
    env = MinAtarConfig("MinAtar/Breakout-v1", num_envs=4)
    a2c = []
    for _ in range(2):
        agent = A2CAgent(A2CConfig(num_envs=4), env, seed=1)
        try:
            out = agent.train(2000)
            a2c.append(agent.model.policy.weight.detach().clone())
        finally:
            agent.close()
    assert out["frames"] >= 2000 and torch.equal(a2c[0], a2c[1])
    agent = MGRLAgent(MGRLConfig(A2CConfig(num_envs=4), meta_lr=0.05), env, seed=0)
    try:
        start = agent.meta_parameters()
        out = agent.train(2000)
    finally:
        agent.close()
    end = out["meta"][-1][1]
    assert end["gamma"] != start["gamma"] and all(math.isfinite(v) for v in end.values())


def test_training_throughput_side_by_side():
    out = training_throughput(
        "MinAtar/Breakout-v1", ("a2c", "mgrl_lvc", "sb3_a2c"), num_envs=2, chunk_steps=64, rounds=1
    )
    assert set(out) == {"a2c", "mgrl_lvc", "sb3_a2c"}
    assert all(e["frames_per_s"] > 0 for e in out.values())
    assert out["sb3_a2c"]["ratio_to_sb3_a2c"] == pytest.approx(1.0)


def test_compare_minatar_cli_writes_curves_table_and_meta_trajectories(tmp_path, capsys):
    out = tmp_path / "minatar"
    code = main(
        [
            "compare", "minatar", "--frames", "600", "--num-envs", "2", "--seeds", "0,1", "--workers", "1",
            "--meta-lr", "0.05", "--out", str(out), "--no-progress",
        ]
    )  # fmt: skip
    assert code == 0
    for name in (
        "minatar_compare.jsonl",
        "minatar_compare_curves.csv",
        "minatar_compare_meta.csv",
        "minatar_compare.md",
        "minatar_compare_breakout-v1.png",
        "minatar_compare_breakout-v1_meta.png",
    ):
        assert (out / name).exists(), name
    rows = [json.loads(line) for line in (out / "minatar_compare.jsonl").read_text().splitlines()]
    assert {r["agent"] for r in rows} == {"sb3_a2c", "sb3_ppo", "a2c", "mgrl_pg", "mgrl_lvc"}
    assert all(r["frames"] == 600 and r["episodes"] > 0 for r in rows)
    for r in rows:
        if r["agent"].startswith("mgrl"):
            (f0, m0), (f1, m1) = r["meta_trace"][0], r["meta_trace"][-1]
            assert f0 == 0 and m0["gamma"] == pytest.approx(0.99) and f1 >= 600
            assert m1["gamma"] != m0["gamma"]
    table = capsys.readouterr().out
    assert "MGRL-LVC minus MGRL-pg" in table and "nan" not in table

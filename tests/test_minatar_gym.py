"""MinAtar as registered Gymnasium environments (metagrad.envs.minatar.MinAtarEnv)."""

from __future__ import annotations

import re
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from metagrad.envs.minatar import GAMES, GYM_IDS, MinAtarConfig, MinAtarEnv

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # v0 ids: Gymnasium's version hint
    pytest.mark.filterwarnings("ignore:.*seed. function is dropped"),  # the package env's seed()
]


def test_every_game_and_action_set_is_registered_and_passes_the_checker():
    assert len(GYM_IDS) == 2 * len(GAMES) and set(GYM_IDS) <= set(gym.registry)
    for env_id, game in GYM_IDS.items():
        env = gym.make(env_id, render_mode="rgb_array")
        check_env(env.unwrapped)
        vec = MinAtarConfig(game, num_envs=1).make()
        assert env.observation_space.shape == vec.obs_shape
        assert env.action_space.n == vec.num_actions == (6 if env_id.endswith("-v0") else vec.num_actions)
        env.close()


def test_the_packages_own_env_fails_the_seeding_check():
    # why MinAtarEnv exists: the minatar package's env never seeds Gymnasium's generator
    import minatar.gym

    env = minatar.gym.BaseEnv("breakout", use_minimal_action_set=True)
    with pytest.raises(AssertionError, match=re.escape("super().reset(seed=seed)")):
        check_env(env)


def _play(env: gym.Env, seed: int, steps: int = 200) -> tuple[np.ndarray, np.ndarray]:
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    frames, rewards = [obs], []
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        frames.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            obs, _ = env.reset()
            frames.append(obs)
    return np.stack(frames), np.asarray(rewards)


def test_seeded_games_repeat_and_match_the_vector_env():
    env = gym.make("MetaGrad/MinAtar-SpaceInvaders-v1")
    first, second, other = _play(env, 4), _play(env, 4), _play(env, 5)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], other[0])
    # game i of a vector env reset with seed s plays like MinAtarEnv reset with seed s + i
    vec = MinAtarConfig("MinAtar/Seaquest-v1", num_envs=3).make()
    single = MinAtarEnv("MinAtar/Seaquest-v1")
    np.testing.assert_array_equal(vec.reset(seed=10)[2], single.reset(seed=12)[0])
    rng = np.random.default_rng(0)
    for _ in range(60):
        actions = rng.integers(0, vec.num_actions, 3)
        step = vec.step(actions)
        obs, reward, terminated, _, _ = single.step(int(actions[2]))
        assert reward == step.raw_reward[2] and terminated == step.terminated[2]
        if terminated:
            break
        np.testing.assert_array_equal(obs, step.obs[2])


def test_render_draws_each_channel_in_its_colour():
    env = MinAtarEnv("MinAtar/Freeway-v1", render_mode="rgb_array", scale=4)
    env.reset(seed=0)
    image = env.render()
    assert image.shape == (40, 40, 3) and image.dtype == np.uint8
    state = env._game.state()
    empty = ~state.any(-1)
    assert (image[::4, ::4][empty] == 0).all() and (image[::4, ::4][~empty] != 0).any(-1).all()
    assert MinAtarEnv("MinAtar/Freeway-v1").render() is None


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="game"):
        MinAtarEnv("MinAtar/Pong-v1")
    with pytest.raises(ValueError, match="render_mode"):
        MinAtarEnv(render_mode="human")
    with pytest.raises(ValueError, match="sticky_action_prob"):
        MinAtarEnv(sticky_action_prob=2.0)
    env = MinAtarEnv("MinAtar/Breakout-v1")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(3)


def test_registration_is_free_and_the_module_prefix_works_in_a_fresh_interpreter():
    script = (
        "import sys, gymnasium\n"
        "import metagrad\n"
        "assert 'minatar' not in sys.modules and 'metagrad.envs.atari' not in sys.modules\n"
        "env = gymnasium.make('MetaGrad/MinAtar-Breakout-v1', max_episode_steps=5)\n"
        "obs, _ = env.reset(seed=0)\n"
        "assert obs.shape == (4, 10, 10) and obs.dtype.name == 'float32'\n"
        "vec = gymnasium.make_vec('MetaGrad/MinAtar-Asterix-v1', num_envs=2, vectorization_mode='sync')\n"
        "assert vec.reset(seed=0)[0].shape == (2, 4, 10, 10)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    fresh = "import gymnasium\ngymnasium.make('metagrad:MetaGrad/MinAtar-Freeway-v1').reset(seed=1)\n"
    done = subprocess.run([sys.executable, "-c", fresh], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr

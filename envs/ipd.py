"""Iterated two-player matrix games with memory-one policies: IPD and Iterated Matching Pennies.

Convention (Foerster et al. 2018, LOLA): each agent has 5 logits. Index 0 is the first move;
indices 1..4 are the previous joint outcome *seen from that agent's own side*, ``(own, other)``
in the order CC, CD, DC, DD. ``sigmoid(theta[s])`` is the probability to cooperate. Action 0 is
cooperate (C), action 1 is defect (D).

Payoff to an agent for ``(own, other)``: IPD CC -1, CD -3, DC 0, DD -2; Iterated Matching
Pennies (agent 1 wants to match, agent 2 to differ; C = heads) +1 / -1. Values are unnormalised
discounted sums ``sum_t gamma^t r_t``; per-step averages are reported separately
(:func:`per_step_average`).

Three faces of the same game:

* :func:`ipd_rollout`: a batched torch engine that plays ``B`` episodes of two memory-one
  policies (or a batch ``[*G, 5]`` of policy pairs) for ``H`` steps at once, CPU or CUDA;
* :class:`IPDParallelEnv`: the two-player game as a PettingZoo ``ParallelEnv``;
* :class:`IPDEnv`: Gymnasium single-agent env (``MetaGrad/IPD-v0``, ``MetaGrad/IMP-v0``) against a
  fixed memory-one opponent (default tit-for-tat).

Inside the engine the joint state is indexed from agent 1's side: 0 = start, ``1 + 2 a1 + a2``
after a step. Agent 2 sees the same state through :data:`STATE_SWAP`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from pettingzoo import ParallelEnv

from metagrad.envs.tabular.engine import TimeMajorBatch
from metagrad.envs.tabular.gym import RENDER_FPS, cell_strip
from metagrad.envs.tabular.sampling import RowSampler
from metagrad.registry import Registry
from metagrad.validation import check_choice, check_finite_tensor, check_int, check_real

__all__ = [
    "ALWAYS_COOPERATE",
    "ALWAYS_DEFECT",
    "DETERMINISTIC_LOGIT",
    "GAMES",
    "IPD_BLOCK_STEPS",
    "NUM_LOGITS",
    "OUTCOMES",
    "STATE_SWAP",
    "TIT_FOR_TAT",
    "IPDEnv",
    "IPDParallelEnv",
    "IPDTrajectory",
    "MatrixGame",
    "check_gamma",
    "check_memory_one_logits",
    "get_game",
    "ipd_rollout",
    "joint_outcome_probs",
    "memory_one_log_probs",
    "memory_one_logits",
    "per_step_average",
]

NUM_LOGITS = 5
OUTCOMES = ("CC", "CD", "DC", "DD")
# Agent-1-side joint state -> the same state seen by agent 2 (CD and DC swap).
STATE_SWAP = (0, 1, 3, 2, 4)
# sigmoid(40.0) == 1.0 exactly in float64: a deterministic memory-one policy with finite logits.
DETERMINISTIC_LOGIT = 40.0


@dataclass(frozen=True)
class MatrixGame:
    """A symmetric-information 2x2 stage game, payoffs indexed by agent 1's joint outcome.

    Attributes:
        name: registry name.
        payoff1, payoff2: payoff to agent 1 and to agent 2 for the joint outcome
            ``(a1, a2)`` in the order CC, CD, DC, DD (agent 1's action first).
        description: one line for listings.
    """

    name: str
    payoff1: tuple[float, float, float, float]
    payoff2: tuple[float, float, float, float]
    description: str = ""

    def __post_init__(self) -> None:
        for field_name in ("payoff1", "payoff2"):
            value = getattr(self, field_name)
            if len(value) != 4:
                raise ValueError(f"{field_name}: expected 4 finite payoffs (CC, CD, DC, DD), got {value!r}")
            for outcome, payoff in zip(("CC", "CD", "DC", "DD"), value, strict=True):
                check_real(f"{field_name}[{outcome}]", payoff)

    def payoffs(self, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> torch.Tensor:
        """``[2, 4]`` tensor: row ``i`` is agent ``i + 1``'s payoff per joint outcome."""
        return torch.tensor([self.payoff1, self.payoff2], dtype=dtype, device=device)


# The games by name (``"ipd"``, ``"imp"``).
GAMES: Registry[MatrixGame] = Registry("game")
GAMES.register(
    "ipd",
    MatrixGame(
        "ipd",
        (-1.0, -3.0, 0.0, -2.0),
        (-1.0, 0.0, -3.0, -2.0),
        "Iterated Prisoner's Dilemma, payoffs CC -1, CD -3, DC 0, DD -2 (Foerster et al. 2018)",
    ),
)
GAMES.register(
    "imp",
    MatrixGame(
        "imp",
        (1.0, -1.0, -1.0, 1.0),
        (-1.0, 1.0, 1.0, -1.0),
        "Iterated Matching Pennies, agent 1 matches (+1), agent 2 mismatches (zero-sum)",
    ),
)


def get_game(game: str | MatrixGame) -> MatrixGame:
    """Look up a game by name (``"ipd"``, ``"imp"``); an unknown name raises the registry's
    ``ValueError`` listing the games."""
    if isinstance(game, MatrixGame):
        return game
    return GAMES[game]


def memory_one_logits(
    first: float, cc: float, cd: float, dc: float, dd: float, *, dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """Logits ``[5]`` of a memory-one policy from its cooperation probabilities (own side).

    Probabilities 0 and 1 map to ``-/+ DETERMINISTIC_LOGIT`` (exactly 0 and 1 after the sigmoid
    in float64).
    """
    probs = torch.tensor([first, cc, cd, dc, dd], dtype=torch.float64)
    if ((probs < 0) | (probs > 1)).any():
        raise ValueError(f"probabilities: expected values in [0, 1], got {probs.tolist()}")
    logits = torch.logit(probs).clamp(-DETERMINISTIC_LOGIT, DETERMINISTIC_LOGIT)
    return logits.to(dtype)


TIT_FOR_TAT = memory_one_logits(1, 1, 0, 1, 0)
ALWAYS_COOPERATE = memory_one_logits(1, 1, 1, 1, 1)
ALWAYS_DEFECT = memory_one_logits(0, 0, 0, 0, 0)


def check_memory_one_logits(theta: Any, name: str = "theta") -> None:
    """Raise ``ValueError`` naming ``name`` unless it is a finite float tensor ``[..., 5]``."""
    if not isinstance(theta, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor [..., 5], got {type(theta).__name__}")
    if theta.ndim < 1 or theta.shape[-1] != NUM_LOGITS:
        raise ValueError(
            f"{name}: expected shape [..., 5] (first move + CC, CD, DC, DD), got {list(theta.shape)}"
        )
    if not theta.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got {theta.dtype}")
    check_finite_tensor(name, theta)


def check_gamma(gamma: Any) -> float:
    """``gamma`` as a float in ``[0, 1)``, or ``ValueError``."""
    return check_real("gamma", gamma, minimum=0.0, maximum=1.0, open_max=True)


def per_step_average(value: torch.Tensor | float, gamma: float, horizon: int | None = None):
    """Discount-weighted per-step average of a value: ``V / sum_{t<H} gamma^t`` (``(1 - gamma) V``
    for the infinite horizon). Mutual cooperation in the IPD is -1, mutual defection -2."""
    gamma = check_gamma(gamma)
    if horizon is None:
        return value * (1.0 - gamma)
    horizon = check_int("horizon", horizon, numpy_ok=True)
    weight = float(horizon) if gamma == 1.0 else (1.0 - gamma**horizon) / (1.0 - gamma)
    return value / weight


def memory_one_log_probs(theta: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """``log pi(a_t | s_t)`` of memory-one policies, differentiable w.r.t. ``theta``.

    Args:
        theta: ``[*G, 5]`` logits (own side).
        states: long ``[T, B, *G]`` states seen from the same side (0 = start, 1..4 = outcome).
        actions: long or bool ``[T, B, *G]`` (0 = cooperate, 1 = defect).
    Returns:
        ``[T, B, *G]``: ``log sigmoid(theta[s_t])`` if cooperated, ``log sigmoid(-theta[s_t])`` if not.
    """
    batch_shape = theta.shape[:-1]
    g = int(math.prod(batch_shape))
    # [*G, 5, 2] table of log-probabilities, gathered once (one op over the whole batch)
    table = torch.nn.functional.logsigmoid(torch.stack([theta, -theta], dim=-1))
    index = (2 * states + actions).to(torch.int32)  # entry of the [5, 2] table (small-int arithmetic)
    if g > 1:
        index = index + (torch.arange(g, device=theta.device, dtype=torch.int32) * (2 * NUM_LOGITS)).reshape(
            batch_shape
        )
    return table.reshape(-1).index_select(0, index.reshape(-1)).view(index.shape)


def joint_outcome_probs(theta1: torch.Tensor, theta2: torch.Tensor) -> torch.Tensor:
    """Probabilities of the next joint outcome from every joint state, differentiable.

    Args:
        theta1, theta2: ``[*G, 5]`` logits (broadcast), each from its own side.
    Returns:
        ``Q [*G, 5, 4]``: ``Q[..., s, o]`` is the probability of outcome ``o`` (CC, CD, DC, DD,
        agent 1's action first) from joint state ``s`` (agent 1's side; 0 = start). The agents
        act independently, so ``Q`` is the product of their cooperation probabilities.
    """
    dtype = torch.promote_types(theta1.dtype, theta2.dtype)
    p1 = torch.sigmoid(theta1.to(dtype))
    p2 = torch.sigmoid(theta2.to(dtype)[..., list(STATE_SWAP)])  # agent 2 in agent 1's state order
    p1, p2 = torch.broadcast_tensors(p1, p2)
    return torch.stack([p1 * p2, p1 * (1 - p2), (1 - p1) * p2, (1 - p1) * (1 - p2)], dim=-1)


# Outcomes drawn per uniform by ipd_rollout: one draw from the 4^k joint outcomes of k steps.
IPD_BLOCK_STEPS = 3


def _block_probs(Q: torch.Tensor, steps: int) -> torch.Tensor:
    """``[g, 5, 4^steps]``: the probability of each sequence of ``steps`` outcomes (the first in
    the most significant base-4 digit) from each state, from one-step ``Q [g, 5, 4]``."""
    out = Q
    for _ in range(steps - 1):
        # extend every sequence by one outcome from the state its last outcome leads to
        last = torch.arange(out.shape[-1], device=Q.device) % 4
        out = (out.unsqueeze(-1) * Q[:, 1 + last, :].unsqueeze(1)).flatten(-2)
    return out


@dataclass(frozen=True, eq=False)
class IPDTrajectory(TimeMajorBatch):
    """A time-major batch of episodes of a two-player memory-one game from :func:`ipd_rollout`.

    Shapes ``[T, B, *G]`` (``T`` horizon, ``B`` episodes per policy pair, ``G`` batch of pairs).

    Attributes:
        states: long; the joint state before step t seen from agent 1's side (0 = start).
        actions1, actions2: long; 0 = cooperate, 1 = defect.
        log_probs1, log_probs2: each agent's ``log pi_i(a_i,t | s_t)``, differentiable w.r.t.
            its logits; ``log_probs1 + log_probs2`` is the joint log-probability (what a LOLA-DiCE
            magic box holds).
        behaviour_log_probs1, behaviour_log_probs2: the same values cut from the graph.
        rewards1, rewards2: each agent's payoff.
        discounts: ``gamma`` per step (games never terminate).
        terminated, truncated: bool, kept separate; ``truncated`` is true at the last step.
        final_states: long ``[B, *G]``: the state after the last step.
    """

    states: torch.Tensor
    actions1: torch.Tensor
    actions2: torch.Tensor
    log_probs1: torch.Tensor
    log_probs2: torch.Tensor
    behaviour_log_probs1: torch.Tensor
    behaviour_log_probs2: torch.Tensor
    rewards1: torch.Tensor
    rewards2: torch.Tensor
    discounts: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_states: torch.Tensor

    @property
    def joint_log_probs(self) -> torch.Tensor:
        """``log pi_1 + log pi_2`` per step, ``[T, B, *G]``."""
        return self.log_probs1 + self.log_probs2

    @property
    def joint_behaviour_log_probs(self) -> torch.Tensor:
        return self.behaviour_log_probs1 + self.behaviour_log_probs2

    def joint_log_probs_under(self, theta1: torch.Tensor, theta2: torch.Tensor) -> torch.Tensor:
        """``log pi_1 + log pi_2`` of the stored actions under other logits ``[*G, 5]``
        (differentiable): what replayed episodes contribute to an off-policy magic box."""
        return memory_one_log_probs(theta1, self.states, self.actions1) + memory_one_log_probs(
            theta2[..., list(STATE_SWAP)], self.states, self.actions2
        )

    def rewards(self, agent: int) -> torch.Tensor:
        """Payoffs of agent ``1`` or ``2``, ``[T, B, *G]``."""
        if agent not in (1, 2):
            raise ValueError(f"agent: expected 1 or 2, got {agent!r}")
        return self.rewards1 if agent == 1 else self.rewards2

    def states_of(self, agent: int) -> torch.Tensor:
        """States seen from agent ``1`` or ``2``'s own side, ``[T, B, *G]``."""
        if agent not in (1, 2):
            raise ValueError(f"agent: expected 1 or 2, got {agent!r}")
        if agent == 1:
            return self.states
        return torch.tensor(STATE_SWAP, device=self.states.device)[self.states]


def ipd_rollout(
    theta1: torch.Tensor,
    theta2: torch.Tensor,
    num_episodes: int,
    horizon: int = 100,
    *,
    game: str | MatrixGame = "ipd",
    gamma: float = 0.96,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> IPDTrajectory:
    """Play ``num_episodes`` length-``horizon`` episodes of two memory-one policies, batched.

    Every episode of every policy pair advances together, :data:`IPD_BLOCK_STEPS` steps per
    tensor operation: one uniform draws the next ``k`` joint outcomes at once from their exact
    joint law (alias tables over the ``4^k`` outcome sequences from each state, built from the
    product of both agents' cooperation probabilities). Log-probs are gathered once at the end
    and carry the graphs of ``theta1`` and ``theta2`` (to any order).

    Args:
        theta1, theta2: ``[5]`` or ``[*G, 5]`` logits (broadcast to a common ``G``).
        num_episodes: ``B >= 1`` episodes per pair.
        horizon: ``H >= 1`` steps per episode.
        game: ``"ipd"``, ``"imp"`` or a :class:`MatrixGame`.
        gamma: per-step discount in ``[0, 1)`` (recorded in ``discounts``).
        generator: source of randomness on ``device``; same seed, same episodes.
        device: where to play; defaults to ``theta1.device``.
    Returns:
        An :class:`IPDTrajectory` with tensors ``[T, B, *G]``.
    """
    check_memory_one_logits(theta1, "theta1")
    check_memory_one_logits(theta2, "theta2")
    B = check_int("num_episodes", num_episodes, numpy_ok=True)
    H = check_int("horizon", horizon, numpy_ok=True)
    gamma = check_gamma(gamma)
    spec = get_game(game)
    device = torch.device(device) if device is not None else theta1.device
    dtype = torch.promote_types(theta1.dtype, theta2.dtype)
    batch_shape = torch.broadcast_shapes(theta1.shape[:-1], theta2.shape[:-1])
    theta1 = theta1.to(device=device, dtype=dtype).expand(*batch_shape, NUM_LOGITS)
    theta2 = theta2.to(device=device, dtype=dtype).expand(*batch_shape, NUM_LOGITS)
    g = int(math.prod(batch_shape))
    steps = min(IPD_BLOCK_STEPS, H)
    blocks = -(-H // steps)

    with torch.no_grad():
        # one draw per block of `steps` steps from the exact joint law of their outcomes
        # (float64 tables and uniforms whatever the logits' dtype)
        Q = joint_outcome_probs(
            theta1.detach().reshape(g, NUM_LOGITS), theta2.detach().reshape(g, NUM_LOGITS)
        )
        sampler = RowSampler.build(_block_probs(Q.double(), steps).reshape(g * NUM_LOGITS, -1), kind="alias")
        # one draw per episode of every pair, flattened: entry b * g + pair
        u = torch.rand((blocks, B * g), generator=generator, device=device, dtype=torch.float64)
        base = (torch.arange(g, device=device) * NUM_LOGITS).repeat(B) if g > 1 else None
        prepared = sampler.prepare(u, base)
        codes = torch.empty((blocks, B * g), dtype=torch.long, device=device)
        s = torch.zeros(B * g, dtype=torch.long, device=device)
        for b, prepared_b in enumerate(zip(*prepared, strict=True)):
            code = sampler.draw(prepared_b, ((s, 1),), out=codes[b])
            s = torch.bitwise_and(code, 3).add_(1)  # the state after the block's last outcome
        codes = codes.view(blocks, B, g)
        # decode the blocks' outcomes (base-4 digits) with 16-bit arithmetic
        small = torch.int16
        shifts = torch.arange(2 * (steps - 1), -1, -2, device=device, dtype=small).reshape(1, steps, 1, 1)
        outcome = torch.bitwise_and(codes.to(small).unsqueeze(1) >> shifts, 3).reshape(blocks * steps, B, g)[
            :H
        ]
        states = torch.zeros((H + 1, B, g), dtype=small, device=device)
        torch.add(outcome, 1, out=states[1:])
        index = outcome.reshape(-1).to(torch.int32)
        payoffs = spec.payoffs(dtype, device)
        rewards1 = payoffs[0].index_select(0, index)
        rewards2 = payoffs[1].index_select(0, index)
        a1 = outcome >> 1
        a2 = torch.bitwise_and(outcome, 1)

    shape = (H, B, *batch_shape)
    st = states[:-1].reshape(shape)
    lp1 = memory_one_log_probs(theta1, st, a1.reshape(shape))
    # agent 2's logits in agent 1's state order
    lp2 = memory_one_log_probs(theta2[..., list(STATE_SWAP)], st, a2.reshape(shape))
    st, a1, a2 = st.long(), a1.reshape(shape).long(), a2.reshape(shape).long()
    terminated, truncated = IPDTrajectory.horizon_flags(shape, device)
    return IPDTrajectory(
        states=st,
        actions1=a1,
        actions2=a2,
        log_probs1=lp1,
        log_probs2=lp2,
        behaviour_log_probs1=lp1.detach(),
        behaviour_log_probs2=lp2.detach(),
        rewards1=rewards1.reshape(shape),
        rewards2=rewards2.reshape(shape),
        discounts=torch.full(shape, gamma, dtype=dtype, device=device),
        terminated=terminated,
        truncated=truncated,
        final_states=states[-1].reshape(B, *batch_shape).long(),
    )


def _np_policy(logits: Any, name: str) -> np.ndarray:
    theta = torch.as_tensor(logits, dtype=torch.float64)
    check_memory_one_logits(theta, name)
    if theta.ndim != 1:
        raise ValueError(f"{name}: expected one policy of shape [5], got {list(theta.shape)}")
    return torch.sigmoid(theta).numpy()


_ACTION_COLOURS = np.array([[0, 170, 0], [200, 0, 0], [60, 60, 60]], dtype=np.uint8)  # C, D, none


def _render(mode: str | None, state: int, t: int, horizon: int) -> str | np.ndarray | None:
    """The ``ansi`` line or the ``rgb_array`` frame (the last two actions, own side first, green
    cooperate / red defect, grey at the start, over the episode's progress)."""
    if mode == "ansi":
        last = "start" if state == 0 else OUTCOMES[state - 1]
        return f"t={t} last={last}"
    if mode == "rgb_array":
        actions = (2, 2) if state == 0 else divmod(state - 1, 2)
        return cell_strip(_ACTION_COLOURS[list(actions)], t / horizon)
    return None


class IPDEnv(gym.Env):
    """Gymnasium single-agent face: play against a fixed memory-one opponent.

    Ids ``MetaGrad/IPD-v0`` (Prisoner's Dilemma) and ``MetaGrad/IMP-v0`` (Matching Pennies, the
    agent is the matcher). Observation ``Discrete(5)``: 0 at the start, else ``1 + 2 own + other``
    of the previous step (own side). Action ``Discrete(2)``: 0 cooperate, 1 defect. Reward: the
    agent's payoff. Episodes are truncated (never terminated) at ``horizon``.

    Args:
        opponent: logits ``[5]`` of the opponent's memory-one policy (its own side); default
            tit-for-tat.
        horizon: steps per episode.
        game: ``"ipd"`` or ``"imp"``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"], "render_fps": RENDER_FPS}

    def __init__(
        self,
        opponent: Any = None,
        horizon: int = 100,
        game: str = "ipd",
        render_mode: str | None = None,
    ) -> None:
        self.game = get_game(game)
        self.horizon = check_int("horizon", horizon, numpy_ok=True)
        self._opponent = _np_policy(TIT_FOR_TAT if opponent is None else opponent, "opponent")
        if render_mode is not None:
            check_choice("render_mode", render_mode, self.metadata["render_modes"])
        self.render_mode = render_mode
        self.observation_space = spaces.Discrete(NUM_LOGITS)
        self.action_space = spaces.Discrete(2)
        self._state = 0
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._state, self._t = 0, 0
        return np.int64(0), {"step": 0}

    def step(self, action):
        if not self.action_space.contains(action):
            raise ValueError(f"action: expected 0 (cooperate) or 1 (defect), got {action!r}")
        own = int(action)
        other = int(self.np_random.random() >= self._opponent[STATE_SWAP[self._state]])
        outcome = 2 * own + other
        self._state = 1 + outcome
        self._t += 1
        reward = float(self.game.payoff1[outcome])
        truncated = self._t >= self.horizon
        return np.int64(self._state), reward, False, truncated, {"step": self._t, "opponent_action": other}

    def render(self):
        return _render(self.render_mode, self._state, self._t, self.horizon)


class IPDParallelEnv(ParallelEnv):
    """The two-player game as a PettingZoo ``ParallelEnv`` (``ipd_v0`` / ``imp_v0``).

    Agents ``player_0`` (agent 1) and ``player_1`` (agent 2). Each observes the previous joint
    outcome from its own side (``Discrete(5)``, 0 at the start) and acts in ``Discrete(2)``
    (0 cooperate, 1 defect); rewards are the game's payoffs. All agents are truncated together
    after ``horizon`` steps.
    """

    metadata: ClassVar[dict[str, Any]] = {
        "render_modes": ["ansi", "rgb_array"],
        "render_fps": RENDER_FPS,
        "name": "ipd_v0",
        "is_parallelizable": True,
    }

    def __init__(self, horizon: int = 100, game: str = "ipd", render_mode: str | None = None) -> None:
        self.game = get_game(game)
        self.horizon = check_int("horizon", horizon, numpy_ok=True)
        if render_mode is not None:
            check_choice("render_mode", render_mode, self.metadata["render_modes"])
        self.metadata = {**self.metadata, "name": f"{self.game.name}_v0"}
        self.render_mode = render_mode
        self.possible_agents = ["player_0", "player_1"]
        self.agents: list[str] = []
        self._state = 0
        self._t = 0

    @functools.cache  # noqa: B019  (the same space object every call)
    def observation_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(NUM_LOGITS)

    @functools.cache  # noqa: B019
    def action_space(self, agent: str) -> spaces.Discrete:
        return spaces.Discrete(2)

    def _observations(self) -> dict[str, np.ndarray]:
        # 0-d int64 arrays: members of Discrete(5) with a dtype, as PettingZoo's AEC checks want
        return {
            "player_0": np.array(self._state, dtype=np.int64),
            "player_1": np.array(STATE_SWAP[self._state], dtype=np.int64),
        }

    def reset(self, seed: int | None = None, options: dict | None = None):
        self.agents = list(self.possible_agents)
        self._state, self._t = 0, 0
        return self._observations(), {a: {"step": 0} for a in self.agents}

    def step(self, actions: dict[str, int]):
        if not self.agents:
            raise RuntimeError("step() called after the episode ended; call reset()")
        missing = set(self.agents) - set(actions)
        if missing:
            raise ValueError(f"actions: missing for agents {sorted(missing)}")
        a1, a2 = int(actions["player_0"]), int(actions["player_1"])
        for name, a in (("player_0", a1), ("player_1", a2)):
            if a not in (0, 1):
                raise ValueError(f"actions[{name!r}]: expected 0 (cooperate) or 1 (defect), got {a!r}")
        outcome = 2 * a1 + a2
        self._state = 1 + outcome
        self._t += 1
        rewards = {
            "player_0": float(self.game.payoff1[outcome]),
            "player_1": float(self.game.payoff2[outcome]),
        }
        done = self._t >= self.horizon
        terminations = {a: False for a in self.agents}
        truncations = {a: done for a in self.agents}
        infos = {a: {"step": self._t} for a in self.agents}
        observations = self._observations()
        if done:
            self.agents = []
        return observations, rewards, terminations, truncations, infos

    def render(self):
        return _render(self.render_mode, self._state, self._t, self.horizon)

    def close(self) -> None:
        pass

    def state(self) -> np.ndarray:
        return np.array([self._state], dtype=np.int64)

    def __str__(self) -> str:
        return f"IPDParallelEnv(game={self.game.name}, horizon={self.horizon})"

"""The ipd suite's config: experiments, policy-pair kinds, :class:`IPDBenchConfig`, presets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from metagrad.critics import CriticKind, CriticSpec
from metagrad.envs.ipd import check_gamma, get_game
from metagrad.estimators import get_estimator
from metagrad.lola import lola_variant
from metagrad.staged import COMBINATIONS
from metagrad.validation import check_choice, check_int, check_real, check_seed

__all__ = ["EXPERIMENTS", "PAIR_KINDS", "PRESETS", "IPDBenchConfig", "describe_preset"]

EXPERIMENTS = ("decomposition", "sweep_n", "sweep_lr", "sweep_steps", "off_policy")
PAIR_KINDS = ("random", "trained", "run")
_CELL_FIELDS = (
    "env",
    "game",
    "gamma",
    "horizon",
    "num_pairs",
    "repeats",
    "seed",
    "train_iterations",
    "train_lookahead_lr",
    "behaviour_shift",
    "behaviour_lag",
    "run_iterations",
    "off_policy_buffer",
)


@dataclass(frozen=True)
class IPDBenchConfig:
    """Everything that defines an IPD/LOLA bench run (recorded in every row)."""

    CELL_FIELDS: ClassVar[tuple[str, ...]] = _CELL_FIELDS

    preset: str = "custom"
    env: str = "MetaGrad/IPD-v0"
    game: str = "ipd"
    gamma: float = 0.96
    horizon: int = 100
    num_pairs: int = 6
    repeats: int = 16
    seed: int = 0
    pair_kinds: tuple[str, ...] = ("random", "trained")
    train_iterations: int = 50
    train_lookahead_lr: float = 0.3
    behaviour_shift: float = 0.05
    behaviour_lag: int = 1
    lookahead_lr: float = 0.3
    lookahead_steps: int = 1
    critic: CriticKind = "learned"
    critic_noise: float = 0.0
    estimators: tuple[str, ...] = ("dice_baseline", "loaded_dice", "lvc", "pg")
    combinations: tuple[str, ...] = COMBINATIONS
    n: int = 128
    sweep_variants: tuple[str, ...] = ("lola_dice", "lola_lvc")
    sweep_n: tuple[int, ...] = (16, 32, 64, 128, 256)
    sweep_lr: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
    sweep_steps: tuple[int, ...] = (1, 2, 3)
    # the official off-policy protocol (lola/lola_dice_off_policy.py): lookahead 0.3, 128 + 128
    # episodes, a FIFO buffer of 1024 episodes (128 per agent's lookahead per update)
    off_policy_pair_kinds: tuple[str, ...] = ("run",)
    off_policy_n: int = 128
    off_policy_buffer: int = 1024
    off_policy_lookahead_lr: float = 0.3
    run_iterations: int = 100
    experiments: tuple[str, ...] = EXPERIMENTS

    def __post_init__(self) -> None:
        get_game(self.game)
        envs = {"MetaGrad/IPD-v0": "ipd", "MetaGrad/IMP-v0": "imp"}
        check_choice("env", self.env, envs, what="env", where="the ipd bench")
        if envs[self.env] != self.game:
            raise ValueError(f"env: {self.env!r} plays game {envs[self.env]!r}, but game is {self.game!r}")
        check_gamma(self.gamma)
        for name in ("horizon", "num_pairs", "n", "off_policy_n", "run_iterations"):
            check_int(name, getattr(self, name))
        check_int("off_policy_buffer", self.off_policy_buffer, 2 * self.off_policy_n)
        if self.off_policy_buffer % self.off_policy_n:
            raise ValueError(
                f"off_policy_buffer: {self.off_policy_buffer} is not a whole number of batches of "
                f"off_policy_n = {self.off_policy_n}"
            )
        check_int("repeats", self.repeats, 2)
        check_seed("seed", self.seed)
        check_int("train_iterations", self.train_iterations, 0)
        check_int("behaviour_lag", self.behaviour_lag, 0)
        check_int("lookahead_steps", self.lookahead_steps, 0)
        if self.behaviour_lag > self.train_iterations:
            raise ValueError(
                f"behaviour_lag: {self.behaviour_lag} exceeds train_iterations {self.train_iterations}"
            )
        if any(v < 1 for v in self.sweep_n):
            raise ValueError("sweep_n: sample sizes must be >= 1")
        if any(k < 0 for k in self.sweep_steps):
            raise ValueError(f"sweep_steps: lookahead steps must be >= 0, got {self.sweep_steps}")
        check_real("behaviour_shift", self.behaviour_shift, minimum=0.0)
        check_real("critic_noise", self.critic_noise, minimum=0.0)
        check_real("lookahead_lr", self.lookahead_lr)
        check_real("train_lookahead_lr", self.train_lookahead_lr)
        check_real("off_policy_lookahead_lr", self.off_policy_lookahead_lr)
        for lr in self.sweep_lr:
            check_real("sweep_lr", lr)
        CriticSpec(self.critic, self.critic_noise)
        for est in self.estimators:
            get_estimator(est)
        for variant in self.sweep_variants:
            lola_variant(variant, replay=1)
        check_choice("combinations", self.combinations, COMBINATIONS)
        for name in ("pair_kinds", "off_policy_pair_kinds"):
            check_choice(name, getattr(self, name), PAIR_KINDS)
        check_choice("experiments", self.experiments, EXPERIMENTS)

    @property
    def off_policy_replay(self) -> int:
        """Replayed episodes of an off-policy lookahead: the buffer less the fresh batch."""
        return self.off_policy_buffer - self.off_policy_n

    def base_spec(self, **kwargs: Any) -> dict[str, Any]:
        return dict(
            gamma=self.gamma,
            horizon=self.horizon,
            game=self.game,
            critic=CriticSpec(self.critic, self.critic_noise),
            lookahead_lr=kwargs.pop("lookahead_lr", self.lookahead_lr),
            lookahead_steps=kwargs.pop("lookahead_steps", self.lookahead_steps),
            **kwargs,
        )


PRESETS: dict[str, IPDBenchConfig] = {
    # LOLA-DiCE protocol (Foerster et al. 2018): gamma 0.96, 100-step episodes, batch 128,
    # one lookahead step of 0.3; 8 pairs x 24 repeats per cell.
    "foerster2018": IPDBenchConfig(preset="foerster2018", num_pairs=8, repeats=24),
    "quick": IPDBenchConfig(
        preset="quick",
        horizon=50,
        num_pairs=3,
        repeats=8,
        train_iterations=20,
        estimators=("dice_baseline", "lvc"),
        combinations=("eel", "ele", "lee", "lle", "lll"),
        n=64,
        sweep_variants=("lola_dice",),
        sweep_n=(16, 64),
        sweep_lr=(0.3, 1.0),
        sweep_steps=(1, 2),
        off_policy_n=32,
        off_policy_buffer=128,
        run_iterations=12,
    ),
}


def describe_preset(config: IPDBenchConfig) -> str:
    """One line for ``metagrad list presets``."""
    return (
        f"{config.num_pairs} pairs x {config.repeats} repeats, horizon {config.horizon}, n {config.n}, "
        f"experiments {', '.join(config.experiments)}"
    )

"""MAML-style meta-learners on tabular task distributions (Finn et al. 2017; Liu et al. 2022).

The meta-parameters are the initial policy logits ``theta_0 [S, A]`` (and optionally a LIRPG
intrinsic-reward table ``eta [S, A]`` added to the rewards of the inner loop). Each
meta-iteration draws a meta-batch of tasks, adapts ``theta_0`` to each with K inner steps and
ascends the mean post-adaptation return. The meta-gradient comes from any
:class:`~metagrad.decomposed.MetaGradientSpec` (per-stage estimator and sample size, off-policy
inner stage, first-order), computed for the whole meta-batch in one batched call, or, for the
reference learner (``exact=True``), from the float64 closed form.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from metagrad.agents.optim import check_optimizer, make_optimizer
from metagrad.decomposed import MetaGradientSpec, episodes_per_estimate, sample_meta_gradients_wrt
from metagrad.envs.tabular import TabularTask, TaskDistribution
from metagrad.estimators import stop_gradient
from metagrad.exact import post_adaptation_return
from metagrad.seeding import torch_generator
from metagrad.validation import check_int, check_real

__all__ = ["MAMLConfig", "MAMLLearner", "train_maml"]


@dataclass(frozen=True)
class MAMLConfig:
    """One meta-learner.

    Attributes:
        spec: how each task's meta-gradient is computed (K = ``spec.inner_steps``,
            alpha = ``spec.inner_lr``, stages, critic, objective, first-order). The exact learner
            uses its K, alpha and objective only.
        exact: the reference learner: the float64 exact meta-gradient of the meta-batch.
        meta_batch: tasks per meta-iteration.
        optimizer: ``"adam"`` or ``"sgd"``; lr: its step size (gradient ascent on the return).
        learn_intrinsic_reward: also meta-learn ``eta`` (LIRPG), used in the inner loop only.
        label: name in tables and plots.
    """

    spec: MetaGradientSpec = field(default_factory=MetaGradientSpec)
    exact: bool = False
    meta_batch: int = 20
    optimizer: str = "adam"
    lr: float = 0.1
    learn_intrinsic_reward: bool = False
    label: str = "learner"

    def __post_init__(self) -> None:
        if not isinstance(self.spec, MetaGradientSpec):
            raise ValueError(f"spec: expected a MetaGradientSpec, got {type(self.spec).__name__}")
        if self.spec.meta_parameter != "logits":
            raise ValueError(
                "spec.meta_parameter: the MAML learner meta-learns the initial logits; "
                "use learn_intrinsic_reward=True to learn eta as well"
            )
        check_int("meta_batch", self.meta_batch, 1)
        check_optimizer(self.optimizer)
        check_real("lr", self.lr, minimum=0.0, open_min=True)

    @property
    def wrt(self) -> tuple[str, ...]:
        return ("logits", "intrinsic_reward") if self.learn_intrinsic_reward else ("logits",)

    def episodes_per_iteration(self) -> int:
        """Environment episodes one meta-iteration samples (0 for the exact learner)."""
        return 0 if self.exact else self.meta_batch * episodes_per_estimate(self.spec)


class MAMLLearner:
    """Meta-parameters ``theta_0`` (and ``eta``) with their optimiser."""

    def __init__(
        self,
        config: MAMLConfig,
        num_states: int,
        num_actions: int,
        *,
        logits: torch.Tensor | None = None,
        device: str = "cpu",
    ) -> None:
        self.config = config
        start = torch.zeros(num_states, num_actions, dtype=torch.float64) if logits is None else logits
        if tuple(start.shape) != (num_states, num_actions):
            raise ValueError(f"logits: expected shape [{num_states}, {num_actions}], got {list(start.shape)}")
        self.params = {"logits": stop_gradient(start).to(device, torch.float64).clone().requires_grad_(True)}
        if config.learn_intrinsic_reward:
            self.params["intrinsic_reward"] = torch.zeros_like(self.params["logits"]).requires_grad_(True)
        self.optimizer = make_optimizer(config.optimizer, self.params.values(), config.lr)

    @property
    def eta(self) -> torch.Tensor | None:
        return self.params.get("intrinsic_reward")

    def exact_meta_gradient(self, tasks: TabularTask) -> dict[str, torch.Tensor]:
        """The exact meta-gradient of the mean post-adaptation return over ``tasks``."""
        spec = self.config.spec
        with torch.enable_grad():
            value = post_adaptation_return(
                tasks, self.params["logits"], spec.inner_steps, spec.inner_lr, spec.objective, eta=self.eta
            ).mean()
            inputs = [self.params[name] for name in self.config.wrt]
            grads = torch.autograd.grad(value, inputs, allow_unused=True)
        return {
            name: (torch.zeros_like(x) if g is None else g).detach()
            for name, x, g in zip(self.config.wrt, inputs, grads, strict=True)
        }

    def meta_gradient(self, tasks: TabularTask, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """This learner's meta-gradient for a meta-batch (exact, or one estimate per task, averaged)."""
        if self.config.exact:
            return self.exact_meta_gradient(tasks)
        eta = None if self.eta is None else stop_gradient(self.eta)
        per_task = sample_meta_gradients_wrt(
            tasks,
            stop_gradient(self.params["logits"]),
            self.config.spec,
            1,
            wrt=self.config.wrt,
            generator=generator,
            eta=eta,
        )
        # [1, N, S, A] -> [S, A]: the meta-batch mean (a shared theta_0 feeds every task)
        return {name: g.reshape(-1, *g.shape[-2:]).mean(0) for name, g in per_task.items()}

    def step(self, grads: dict[str, torch.Tensor]) -> None:
        """Gradient *ascent* on the mean post-adaptation return."""
        self.optimizer.zero_grad(set_to_none=True)
        for name, g in grads.items():
            self.params[name].grad = -g.to(self.params[name])
        self.optimizer.step()

    def evaluate(self, tasks: TabularTask) -> float:
        """Exact mean post-adaptation return over ``tasks`` (no gradient kept)."""
        spec = self.config.spec
        value = post_adaptation_return(
            tasks,
            stop_gradient(self.params["logits"]),
            spec.inner_steps,
            spec.inner_lr,
            spec.objective,
            eta=None if self.eta is None else stop_gradient(self.eta),
        )
        return float(value.detach().mean())


def _cosine(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    x = torch.cat([v.reshape(-1) for v in a.values()])
    y = torch.cat([b[k].reshape(-1) for k in a])
    denom = float(x.norm() * y.norm())
    return float(x @ y) / denom if denom > 0 else float("nan")


def train_maml(
    config: MAMLConfig,
    distribution: TaskDistribution,
    iterations: int,
    *,
    seed: int = 0,
    eval_tasks: int | TabularTask = 50,
    device: str = "cpu",
    progress: bool = False,
) -> dict[str, Any]:
    """Meta-train one learner and record its learning curve.

    Every iteration records, before the update: the exact mean post-adaptation return on the
    held-out tasks, the episodes sampled so far, and the cosine between the learner's update
    (its meta-gradient) and the exact meta-gradient of the same meta-batch at the same point.

    Args:
        config: the learner.
        distribution: where tasks come from (training draws seeded by ``seed``; the held-out set
            is :meth:`~metagrad.envs.tabular.TaskDistribution.held_out`, the same for every learner).
        iterations: meta-iterations (>= 0).
        eval_tasks: the number of held-out tasks, or a task batch to evaluate on.
    Returns:
        ``{"held_out_return", "episodes", "cosine", "wall_s", "logits", "intrinsic_reward"}``;
        the curves have ``iterations + 1`` points (``cosine``: ``iterations``).
    """
    check_int("iterations", iterations, 0)
    held = distribution.held_out(eval_tasks) if isinstance(eval_tasks, int) else eval_tasks
    rng = distribution.train_rng(seed)
    gen = torch_generator(seed, device=device)
    learner = MAMLLearner(config, distribution.num_states, distribution.num_actions, device=device)
    per_iteration = config.episodes_per_iteration()
    history: dict[str, Any] = {"held_out_return": [], "episodes": [], "cosine": []}
    start = time.perf_counter()
    iterator = range(iterations)
    if progress and sys.stderr.isatty():  # per-run bars only on a terminal
        iterator = tqdm(iterator, desc=config.label, unit="it", leave=False)
    for it in iterator:
        history["held_out_return"].append(learner.evaluate(held))
        history["episodes"].append(it * per_iteration)
        tasks = distribution.sample(config.meta_batch, rng)
        grads = learner.meta_gradient(tasks, gen)
        exact = grads if config.exact else learner.exact_meta_gradient(tasks)
        history["cosine"].append(_cosine(grads, exact))
        learner.step(grads)
    history["held_out_return"].append(learner.evaluate(held))
    history["episodes"].append(iterations * per_iteration)
    history["wall_s"] = time.perf_counter() - start
    history["logits"] = stop_gradient(learner.params["logits"]).cpu().clone()
    eta = learner.eta
    history["intrinsic_reward"] = None if eta is None else stop_gradient(eta).cpu().clone()
    return history

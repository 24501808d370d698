"""The exact tabular MGRL oracle (metagrad.exact.mgrl) against independent computations.

* an independent float64 numpy implementation (explicit loops over t, s, a; the softmax score
  written out) whose meta-gradient comes from central finite differences of theta_K in
  (gamma, lambda), Richardson-extrapolated: agreement to 1e-6 relative, K = 1, 2, 3;
* the direction as an expectation over every trajectory of a small MDP (the lambda-return by its
  recursion, no closed form), and against a Monte Carlo average of sampled A2C directions;
* hand-solvable cases: horizon 1 (no lambda dependence; the gamma derivative in closed form) and
  one state (the bootstrap does not depend on the action: the meta-gradient is zero);
* batching, and clear errors on bad input.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from metagrad.envs.tabular import TabularTask, random_task, stack_tasks
from metagrad.exact import mgrl_direction, mgrl_meta_gradient

# ----------------------------------------------------------------------------------------------
# an independent implementation (numpy, loops)


def _softmax(theta: np.ndarray) -> np.ndarray:
    z = np.exp(theta - theta.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def np_direction(P, R, init, T, theta, v, gamma, lam) -> np.ndarray:
    """E[sum_t grad log pi(a_t|s_t) (G_t - v(s_t))] by explicit loops."""
    S, A = theta.shape
    pi = _softmax(theta)
    Q = np.zeros((T, S, A))
    U_next = v.copy()  # U_T = v
    for t in reversed(range(T)):
        for s in range(S):
            for a in range(A):
                expected = 0.0
                for s2 in range(S):
                    expected += P[s, a, s2] * ((1.0 - lam) * v[s2] + lam * U_next[s2])
                Q[t, s, a] = R[s, a] + gamma * expected
        U_next = np.array([sum(pi[s, a] * Q[t, s, a] for a in range(A)) for s in range(S)])
    g = np.zeros((S, A))
    d = init.copy()
    for t in range(T):
        for s in range(S):
            for a in range(A):
                for b in range(A):  # d log pi(a|s) / d theta[s, b] = 1[a = b] - pi(b|s)
                    g[s, b] += d[s] * pi[s, a] * (float(a == b) - pi[s, b]) * (Q[t, s, a] - v[s])
        d_next = np.zeros(S)
        for s in range(S):
            for a in range(A):
                for s2 in range(S):
                    d_next[s2] += d[s] * pi[s, a] * P[s, a, s2]
        d = d_next
    return g


def np_theta_k(P, R, init, T, theta0, v, gamma, lam, alpha, K) -> np.ndarray:
    theta = theta0.copy()
    for _ in range(K):
        theta = theta + alpha * np_direction(P, R, init, T, theta, v, gamma, lam)
    return theta


def np_meta_gradient(P, R, init, T, theta0, v, eta, eta_out, alpha, K, h=1e-4) -> np.ndarray:
    """(d theta_K / d eta)^T g(theta_K, eta_out): central differences at h and h/2, Richardson."""
    g_out = np_direction(P, R, init, T, np_theta_k(P, R, init, T, theta0, v, *eta, alpha, K), v, *eta_out)
    out = np.zeros(2)
    for i in range(2):

        def central(step: float, i: int = i) -> np.ndarray:
            up, down = np.array(eta, dtype=float), np.array(eta, dtype=float)
            up[i] += step
            down[i] -= step
            plus = np_theta_k(P, R, init, T, theta0, v, *up, alpha, K)
            minus = np_theta_k(P, R, init, T, theta0, v, *down, alpha, K)
            return (plus - minus) / (2 * step)

        jac = (4.0 * central(h / 2) - central(h)) / 3.0
        out[i] = float((jac * g_out).sum())
    return out


def _random_setting(seed: int, S: int = 4, A: int = 3, T: int = 5, concentration: float = 1.0):
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.full(S, concentration), size=(S, A))
    R = rng.uniform(size=(S, A))
    init = rng.dirichlet(np.ones(S))
    theta0 = rng.normal(size=(S, A))
    v = rng.normal(size=S)
    gamma, lam = rng.uniform(0.3, 0.95, size=2)
    outer = rng.uniform(0.3, 0.95, size=2)
    alpha = rng.uniform(0.5, 3.0)
    task = TabularTask(P=P, R=R, init=init, gamma=0.5, horizon=T)
    return task, (P, R, init, T), theta0, v, (gamma, lam), tuple(outer), alpha


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_direction_matches_the_loop_implementation(seed):
    task, model, theta0, v, (gamma, lam), _, _ = _random_setting(seed)
    got = mgrl_direction(task, torch.tensor(theta0), torch.tensor(v), gamma=gamma, lam=lam)
    assert got.dtype == torch.float64 and got.shape == theta0.shape
    want = np_direction(*model, theta0, v, gamma, lam)
    assert _rel(got, want) < 1e-12


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("K", [1, 2, 3])
def test_meta_gradient_matches_finite_differences_of_an_independent_implementation(seed, K):
    concentration = 1.0 if seed < 2 else 0.01  # the last: near-deterministic transitions (the papers')
    task, model, theta0, v, eta, eta_out, alpha = _random_setting(100 + seed, concentration=concentration)
    got = mgrl_meta_gradient(
        task,
        torch.tensor(theta0),
        torch.tensor(v),
        gamma=eta[0],
        lam=eta[1],
        inner_lr=alpha,
        inner_steps=K,
        outer_gamma=eta_out[0],
        outer_lam=eta_out[1],
    )
    assert got.shape == (2,) and got.dtype == torch.float64
    want = np_meta_gradient(*model, theta0, v, eta, eta_out, alpha, K)
    assert _rel(got, want) < 1e-6


def _enumerate(S: int, A: int, T: int):
    """Every trajectory: states [T + 1, M] (s_0..s_T) and actions [T, M]."""
    rows = [
        ([s0, *steps[1::2]], list(steps[0::2]))
        for s0 in range(S)
        for steps in itertools.product(range(A), range(S), repeat=T)
    ]
    states = torch.tensor([r[0] for r in rows]).T
    actions = torch.tensor([r[1] for r in rows]).T
    return states, actions


def test_direction_and_its_eta_derivatives_are_expectations_over_every_trajectory():
    S, A, T = 2, 2, 3
    task, (P, R, init, _), theta0, v, (gamma, lam), _, _ = _random_setting(7, S, A, T)
    states, actions = _enumerate(S, A, T)
    P, R, init, v = (torch.tensor(x) for x in (P, R, init, v))
    theta = torch.tensor(theta0)
    pi = torch.softmax(theta, -1)
    prob = init[states[0]]
    for t in range(T):
        prob = prob * pi[states[t], actions[t]] * P[states[t], actions[t], states[t + 1]]
    assert abs(float(prob.sum()) - 1.0) < 1e-12
    eta = torch.tensor([gamma, lam], dtype=torch.float64, requires_grad=True)
    rewards = R[states[:T], actions]
    G = [rewards[T - 1] + eta[0] * v[states[T]]]  # G_{T-1} = r_{T-1} + gamma v(s_T)
    for t in range(T - 2, -1, -1):
        G.append(rewards[t] + eta[0] * ((1 - eta[1]) * v[states[t + 1]] + eta[1] * G[-1]))
    adv = torch.stack(G[::-1]) - v[states[:T]]  # [T, M]
    score = torch.nn.functional.one_hot(actions, A).double() - pi[states[:T]]  # d log pi / d theta[s_t]
    per_episode = torch.zeros(states.shape[1], S, A, dtype=torch.float64)
    for t in range(T):
        rows = torch.nn.functional.one_hot(states[t], S).double()
        per_episode = per_episode + rows[:, :, None] * (score[t] * adv[t][:, None])[:, None, :]
    want = (prob[:, None, None] * per_episode).sum(0)
    gamma_t = torch.tensor(gamma, requires_grad=True)
    lam_t = torch.tensor(lam, requires_grad=True)
    got = mgrl_direction(task, theta, v, gamma=gamma_t, lam=lam_t)
    assert _rel(got.detach(), want.detach()) < 1e-12
    w = torch.randn(S, A, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want_eta = torch.autograd.grad((want * w).sum(), eta)[0]
    got_eta = torch.stack(torch.autograd.grad((got * w).sum(), [gamma_t, lam_t]))
    assert _rel(got_eta, want_eta) < 1e-12


def test_direction_agrees_with_a_monte_carlo_average_of_sampled_directions():
    S, A, T, episodes = 3, 2, 4, 40_000
    task, (P, R, init, _), theta0, v, (gamma, lam), _, _ = _random_setting(11, S, A, T)
    rng = np.random.default_rng(2024)
    pi = _softmax(theta0)
    s = np.array([rng.choice(S, p=init) for _ in range(episodes)])
    states, actions = [s], []
    for _ in range(T):
        a = (rng.random(episodes)[:, None] > np.cumsum(pi[s], axis=1)).sum(1).clip(max=A - 1)
        cdf = np.cumsum(P[s, a], axis=1)
        s = (rng.random(episodes)[:, None] > cdf).sum(1).clip(max=S - 1)
        actions.append(a)
        states.append(s)
    states, actions = np.stack(states), np.stack(actions)  # [T + 1, M], [T, M]
    idx = np.arange(episodes)

    def sampled(gamma: float, lam: float) -> np.ndarray:
        G = R[states[T - 1], actions[T - 1]] + gamma * v[states[T]]
        per_episode = np.zeros((episodes, S, A))
        for t in range(T - 1, -1, -1):
            if t < T - 1:
                G = R[states[t], actions[t]] + gamma * ((1 - lam) * v[states[t + 1]] + lam * G)
            score = -pi[states[t]]
            score[idx, actions[t]] += 1.0
            per_episode[idx, states[t]] += score * (G - v[states[t]])[:, None]
        return per_episode

    samples = sampled(gamma, lam)
    mean, se = samples.mean(0), samples.std(0, ddof=1) / np.sqrt(episodes)
    exact = mgrl_direction(task, torch.tensor(theta0), torch.tensor(v), gamma=gamma, lam=lam).numpy()
    z = (mean - exact) / se
    assert np.abs(z).max() < 4.0, z
    # the comparison has power: the same samples reject the direction of another lambda
    other = mgrl_direction(task, torch.tensor(theta0), torch.tensor(v), gamma=gamma, lam=1.0 - lam).numpy()
    assert np.abs((mean - other) / se).max() > 4.0


def test_horizon_one_is_solvable_by_hand():
    task, (P, R, init, _), theta0, v, (gamma, lam), (gamma_o, lam_o), alpha = _random_setting(3, T=1)
    pi = _softmax(theta0)

    def direction(theta: np.ndarray, gamma: float) -> np.ndarray:
        p = _softmax(theta)
        q = R + gamma * P @ v  # lambda plays no part: G_0 = r_0 + gamma v(s_1)
        return init[:, None] * p * (q - (p * q).sum(1, keepdims=True))

    theta1 = theta0 + alpha * direction(theta0, gamma)
    w = P @ v  # d q / d gamma
    d_direction = init[:, None] * pi * (w - (pi * w).sum(1, keepdims=True))
    want = np.array([alpha * float((d_direction * direction(theta1, gamma_o)).sum()), 0.0])
    kwargs = dict(gamma=gamma, lam=lam, inner_lr=alpha, outer_gamma=gamma_o, outer_lam=lam_o)
    got = mgrl_meta_gradient(task, torch.tensor(theta0), torch.tensor(v), inner_steps=1, **kwargs)
    assert _rel(got, want) < 1e-12 and got[1] == 0.0
    for K in (2, 3):  # no lambda dependence at any K
        more = mgrl_meta_gradient(task, torch.tensor(theta0), torch.tensor(v), inner_steps=K, **kwargs)
        assert more[1] == 0.0 and more[0] != 0.0


def test_one_state_the_bootstrap_cannot_favour_an_action_so_the_meta_gradient_is_zero():
    # with one state, gamma and lambda shift every action's Q by the same amount
    task = TabularTask(P=np.ones((1, 3, 1)), R=[[0.1, 0.7, 0.3]], init=[1.0], gamma=0.9, horizon=4)
    logits, v = torch.tensor([[0.2, -0.1, 0.4]]), torch.tensor([1.5])
    kwargs = dict(inner_lr=2.0, outer_gamma=0.9, outer_lam=0.5)
    out = mgrl_meta_gradient(task, logits, v, gamma=0.7, lam=0.3, inner_steps=3, **kwargs)
    assert out.abs().max() < 1e-15
    # and the direction is T pi (R - <pi, R>) for every gamma, lambda
    pi = torch.softmax(logits.double(), -1)
    R = task.R
    want = 4 * pi * (R - (pi * R).sum(-1, keepdim=True))
    assert torch.allclose(mgrl_direction(task, logits, v, gamma=0.2, lam=0.9), want, atol=1e-15)


def test_batches_of_tasks_policies_and_critics_are_independent_problems():
    tasks = [random_task(4, 3, horizon=5, seed=s, dirichlet_alpha=0.5) for s in range(3)]
    batch = stack_tasks(tasks)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 3, generator=gen, dtype=torch.float64)
    values = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    kwargs = dict(gamma=0.8, lam=0.6, inner_lr=1.5, inner_steps=2, outer_gamma=0.9, outer_lam=0.9)
    together = mgrl_meta_gradient(batch, logits, values, **kwargs)
    assert together.shape == (3, 2)
    for i, task in enumerate(tasks):
        alone = mgrl_meta_gradient(task, logits[i], values[i], **kwargs)
        assert torch.allclose(together[i], alone, rtol=1e-12, atol=0)
    # a shared start and critic is copied into every task; a leading policy batch broadcasts
    shared = mgrl_meta_gradient(batch, logits[0], values[0], **kwargs)
    assert shared.shape == (3, 2)
    assert torch.allclose(shared[1], mgrl_meta_gradient(tasks[1], logits[0], values[0], **kwargs))
    stacked = mgrl_meta_gradient(batch, torch.stack([logits, logits + 0.3]), values, **kwargs)
    assert stacked.shape == (2, 3, 2)
    assert torch.allclose(stacked[0], together, rtol=1e-12, atol=0)
    direction = mgrl_direction(batch, logits, values, gamma=0.8, lam=0.6)
    assert direction.shape == (3, 4, 3)
    assert torch.allclose(direction[2], mgrl_direction(tasks[2], logits[2], values[2], gamma=0.8, lam=0.6))


def test_zero_inner_steps_give_zero_and_the_expected_estimates_agree_at_one_step():
    task, _, theta0, v, (gamma, lam), (gamma_o, lam_o), alpha = _random_setting(5)
    kwargs = dict(gamma=gamma, lam=lam, inner_lr=alpha, outer_gamma=gamma_o, outer_lam=lam_o)
    logits, values = torch.tensor(theta0), torch.tensor(v)
    assert torch.equal(mgrl_meta_gradient(task, logits, values, inner_steps=0, **kwargs), torch.zeros(2))
    exact = mgrl_meta_gradient(task, logits, values, inner_steps=1, **kwargs)
    for jacobian in ("exact", "pg", "lvc"):
        one = mgrl_meta_gradient(task, logits, values, jacobian=jacobian, inner_steps=1, **kwargs)
        assert torch.allclose(one, exact, rtol=1e-13, atol=0)
    # from K = 2 the surrogates that drop score-function terms predict a different meta-gradient
    exact2 = mgrl_meta_gradient(task, logits, values, inner_steps=2, **kwargs)
    assert torch.allclose(
        mgrl_meta_gradient(task, logits, values, jacobian="exact", inner_steps=2, **kwargs), exact2
    )
    for jacobian in ("pg", "lvc"):
        biased = mgrl_meta_gradient(task, logits, values, jacobian=jacobian, inner_steps=2, **kwargs)
        assert _rel(biased, exact2) > 1e-3


def test_bad_input_raises_a_clear_error():
    task = random_task(3, 2, horizon=4, seed=0)
    logits, values = torch.zeros(3, 2), torch.zeros(3)
    kwargs = dict(gamma=0.9, lam=0.5, inner_lr=1.0, inner_steps=1, outer_gamma=0.9, outer_lam=0.5)
    for name, bad in (
        ("gamma", 0.0),
        ("gamma", 1.0),
        ("lam", 1.5),
        ("outer_lam", float("nan")),
        ("lam", True),
    ):
        with pytest.raises(ValueError, match=name):
            mgrl_meta_gradient(task, logits, values, **{**kwargs, name: bad})
    with pytest.raises(ValueError, match="inner_steps"):
        mgrl_meta_gradient(task, logits, values, **{**kwargs, "inner_steps": -1})
    with pytest.raises(ValueError, match="inner_lr"):
        mgrl_meta_gradient(task, logits, values, **{**kwargs, "inner_lr": float("inf")})
    with pytest.raises(ValueError, match="logits"):
        mgrl_meta_gradient(task, torch.zeros(3, 3), values, **kwargs)
    for bad_values in (torch.zeros(4), torch.zeros(2, 3), torch.tensor([0.0, float("nan"), 0.0])):
        with pytest.raises(ValueError, match="values"):
            mgrl_meta_gradient(task, logits, bad_values, **kwargs)
    with pytest.raises(ValueError, match="values"):
        mgrl_direction(task, logits, torch.zeros(3, dtype=torch.long), gamma=0.9, lam=0.5)
    with pytest.raises(ValueError, match="lam"):
        mgrl_direction(task, logits, values, gamma=0.9, lam=torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="gamma"):
        mgrl_direction(task, logits, values, gamma=torch.tensor([0.5, 0.6]), lam=0.5)
    with pytest.raises(ValueError, match="jacobian"):
        mgrl_meta_gradient(task, logits, values, jacobian="dice", **kwargs)

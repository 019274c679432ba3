r"""Canonical test problems, with their manifolds of minimizers where known.

Sources: the product model and Rosenbrock-type valley are the non-quadratic examples of Barrett & Dherin (2021) and
Cattaneo & Shigida (arXiv 2502.02132); the uv, hyperbola and diagonal-linear-network models are the slow-SDE
examples of Li, Wang & Arora (arXiv 2110.06914); see docs/theory/slow_sde.md#problems.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .._validation import (
    MAX_DENSE_DIM,
    MAX_DIM,
    check_int_at_least,
    check_positive,
    check_size,
)
from ._problem import Problem


def _squared(model, x, y):
    """Per-example squared loss $\\ell_i = \\frac12 (f(\\theta, x_i) - y_i)^2$ from a model on one input."""

    def example_loss(theta, i):
        return 0.5 * (model(theta, x[i]) - y[i]) ** 2

    def loss(theta):
        r = jax.vmap(lambda xi: model(theta, xi))(x) - y
        return 0.5 * jnp.mean(r**2)

    return loss, example_loss, (lambda theta, i: model(theta, x[i]))


def quadratic(d: int = 20, *, seed: int = 0, condition: float = 10.0, lambda_max: float = 1.0) -> Problem:
    r"""Random SPD quadratic $L(\theta) = \frac12 (\theta-\theta^*)^\top A (\theta-\theta^*)$.

    $A = Q\,\mathrm{diag}(\lambda)\,Q^\top$ with $Q$ a random orthogonal matrix and eigenvalues spaced
    geometrically in $[\lambda_{\max}/\kappa, \lambda_{\max}]$. The minimizer is $\theta^* = 0$.
    """
    d = check_int_at_least("d", d, 1)
    check_size("d", d, limit=MAX_DENSE_DIM, quadratic=True, what="the dense d x d matrix")
    check_positive("condition", condition)
    check_positive("lambda_max", lambda_max)
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    lam = lambda_max * np.geomspace(1.0 / condition, 1.0, d)
    a = jnp.asarray((q * lam) @ q.T)
    a = 0.5 * (a + a.T)
    theta0 = jnp.asarray(rng.standard_normal(d))

    def loss(theta):
        return 0.5 * theta @ (a @ theta)

    return Problem(
        name="quadratic",
        loss=loss,
        theta0=theta0,
        manifold=lambda theta: theta,
        description=f"random SPD quadratic, d={d}, eigenvalues in [{lambda_max / condition:g}, {lambda_max:g}]",
    )


def quadratic_hessian(problem: Problem):
    """The constant Hessian of a :func:`quadratic` problem (dense; for tests and exact solutions)."""
    return jax.hessian(problem.loss)(jnp.zeros(problem.dim))


def product(x: float = 2.0, y: float = 1.5) -> Problem:
    r"""Product model $L(w_1, w_2) = \frac12 (y - w_1 w_2 x)^2$.

    Minimizers: the hyperbola $w_1 w_2 = y/x$. Gradient flow conserves $w_1^2 - w_2^2$; its sharpness at a
    minimizer is $x^2(w_1^2 + w_2^2)$, so flatter minima have smaller $w_1^2+w_2^2$ (Barrett & Dherin 2021).
    """
    xs = jnp.asarray(np.array([x], dtype=np.float64))  # built on the host: no eager JAX op
    ys = jnp.asarray(np.array([y], dtype=np.float64))
    loss, example_loss, model = _squared(lambda th, xi: th[0] * th[1] * xi, xs, ys)
    return Problem(
        name="product",
        loss=loss,
        theta0=jnp.asarray(np.array([2.8, 3.5]) / 4),
        example_loss=example_loss,
        n_examples=1,
        model=model,
        targets=ys,
        manifold=lambda th: jnp.array([th[0] * th[1] * x - y]),
        conserved=lambda th: th[0] ** 2 - th[1] ** 2,
        description=f"product model (y - w1 w2 x)^2/2, x={x:g}, y={y:g}",
    )


def rosenbrock(stiffness: float = 10.0) -> Problem:
    r"""Rosenbrock-type valley $L(a, b) = \frac12 (1-a)^2 + \frac{k}{2}(b - a^2)^2$, minimizer $(1, 1)$."""
    k = check_positive("stiffness", stiffness)

    def loss(th):
        return 0.5 * (1.0 - th[0]) ** 2 + 0.5 * k * (th[1] - th[0] ** 2) ** 2

    return Problem(
        name="rosenbrock",
        loss=loss,
        theta0=jnp.array([-0.5, 0.8]),
        manifold=lambda th: th - 1.0,
        description=f"Rosenbrock-type valley (1-a)^2/2 + {k:g}(b-a^2)^2/2",
    )


def logistic(n: int = 32, d: int = 3, *, seed: int = 0, ridge: float = 0.0) -> Problem:
    r"""Logistic regression $L(\theta) = \frac1n\sum_i \log(1 + e^{-y_i x_i^\top\theta}) + \frac{\rho}{2}\|\theta\|^2$
    on fixed synthetic data (labels from a noisy linear teacher, so the data are not separable)."""
    n = check_size("n", n, what="the data")
    d = check_size("d", d, limit=MAX_DIM // n, per_unit_bytes=8.0 * n, what="the n x d data")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    y = np.where(x @ w + 0.8 * rng.standard_normal(n) > 0, 1.0, -1.0)
    x, y = jnp.asarray(x), jnp.asarray(y)

    def example_loss(theta, i):
        return jnp.logaddexp(0.0, -y[i] * (x[i] @ theta)) + 0.5 * ridge * theta @ theta

    def loss(theta):
        return jnp.mean(jnp.logaddexp(0.0, -y * (x @ theta))) + 0.5 * ridge * theta @ theta

    return Problem(
        name="logistic",
        loss=loss,
        theta0=jnp.asarray(0.5 * rng.standard_normal(d)),
        example_loss=example_loss,
        n_examples=n,
        description=f"logistic regression, n={n}, d={d}",
    )


def linear_overparam(n: int = 5, d: int = 10, *, seed: int = 0) -> Problem:
    r"""Over-parametrized least squares $L = \frac1{2n}\|X\theta - y\|^2$ with $n < d$.

    Minimizers: the affine subspace $X\theta = y$ of dimension $d - n$.
    """
    n = check_size("n", n, what="the data")
    d = check_size("d", d, limit=MAX_DIM // n, per_unit_bytes=8.0 * n, what="the n x d data")
    if n >= d:
        raise ValueError(f"linear_overparam needs n < d, got n={n}, d={d}")
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, d)) / math.sqrt(d))
    y = jnp.asarray(rng.standard_normal(n))
    loss, example_loss, model = _squared(lambda th, xi: xi @ th, x, y)
    return Problem(
        name="linear",
        loss=loss,
        theta0=jnp.asarray(rng.standard_normal(d)),
        example_loss=example_loss,
        n_examples=n,
        model=model,
        targets=y,
        manifold=lambda th: x @ th - y,
        description=f"over-parametrized linear regression, n={n} < d={d}",
    )


def mlp(d: int = 1000, *, inputs: int = 8, n: int = 64, seed: int = 0) -> Problem:
    r"""Two-layer tanh network $f(\theta, x) = w_2^\top \tanh(W_1 x + b_1) + b_2$ on synthetic regression data.

    The width $m$ is the largest with $m(\text{inputs} + 2) + 1 \le d$, so the parameter count is about ``d``
    (``Problem.dim`` gives the exact number). Targets come from a random teacher network of width 4.
    """
    inputs = check_size("inputs", inputs, what="the inputs")
    n = check_size("n", n, limit=100_000, per_unit_bytes=8.0 * inputs, what="the n x inputs data")
    d = check_size("d", d, low=inputs + 3)
    width = (d - 1) // (inputs + 2)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((n, inputs)))
    tw = rng.standard_normal((4, inputs)) / math.sqrt(inputs)
    y = jnp.asarray(np.tanh(np.asarray(x) @ tw.T) @ rng.standard_normal(4))
    shapes = [(width, inputs), (width,), (width,), ()]
    sizes = [int(np.prod(s)) for s in shapes]

    def unpack(theta):
        out, i = [], 0
        for s, k in zip(shapes, sizes):
            out.append(theta[i : i + k].reshape(s))
            i += k
        return out

    def model_one(theta, xi):
        w1, b1, w2, b2 = unpack(theta)
        return w2 @ jnp.tanh(w1 @ xi + b1) + b2

    loss, example_loss, model = _squared(model_one, x, y)
    theta0 = np.concatenate(
        [
            rng.standard_normal(sizes[0]) / math.sqrt(inputs),
            np.zeros(sizes[1]),
            rng.standard_normal(sizes[2]) / math.sqrt(width),
            np.zeros(1),
        ]
    )
    return Problem(
        name="mlp",
        loss=loss,
        theta0=jnp.asarray(theta0),
        example_loss=example_loss,
        n_examples=n,
        model=model,
        targets=y,
        description=f"2-layer tanh MLP, width {width}, d={sum(sizes)}, n={n}",
    )


def uv(y: float = 1.0) -> Problem:
    r"""The uv model $L(u, v) = \frac12(uv - y)^2$ (Li, Wang & Arora 2022; docs/theory/slow_sde.md#uv).

    $\Gamma = \{uv = y\}$; on $\Gamma$, $\mathrm{tr}\,\nabla^2 L = u^2 + v^2$. Gradient flow conserves $u^2 - v^2$.
    """
    ys = jnp.array([y])
    loss, example_loss, model = _squared(lambda th, xi: th[0] * th[1] * xi, jnp.array([1.0]), ys)
    return Problem(
        name="uv",
        loss=loss,
        theta0=jnp.array([2.0, 0.5]),
        example_loss=example_loss,
        n_examples=1,
        model=model,
        targets=ys,
        manifold=lambda th: jnp.array([th[0] * th[1] - y]),
        conserved=lambda th: th[0] ** 2 - th[1] ** 2,
        description=f"uv model (uv - {y:g})^2/2",
    )


def hyperbola() -> Problem:
    r"""Hyperbola model $L = \frac12 (u^2 - v^2 - 1)^2$, $\Gamma = \{u^2 - v^2 = 1\}$ (docs/theory/slow_sde.md#hyperbola).

    Gradient flow conserves $uv$."""
    ys = jnp.array([1.0])
    loss, example_loss, model = _squared(lambda th, xi: (th[0] ** 2 - th[1] ** 2) * xi, jnp.array([1.0]), ys)
    return Problem(
        name="hyperbola",
        loss=loss,
        theta0=jnp.array([1.5, 1.0]),
        example_loss=example_loss,
        n_examples=1,
        model=model,
        targets=ys,
        manifold=lambda th: jnp.array([th[0] ** 2 - th[1] ** 2 - 1.0]),
        conserved=lambda th: th[0] * th[1],
        description="hyperbola model (u^2 - v^2 - 1)^2/2",
    )


def diagonal_net(d: int = 10, n: int = 5, *, sparsity: int = 2, seed: int = 0) -> Problem:
    r"""Diagonal linear network $f(z) = \langle u\odot u - v\odot v, z\rangle$ on sparse regression data, $n < d$.

    Parameters $\theta = (u, v) \in \mathbb R^{2d}$; loss $\frac1{2n}\sum_i (f(z_i) - y_i)^2$ with $y = Z w^*$,
    $w^*$ ``sparsity``-sparse. $\Gamma = \{Z(u\odot u - v\odot v) = y\}$ (docs/theory/slow_sde.md#diagonal).
    """
    d = check_size("d", d, low=2, limit=MAX_DIM // 2)
    n = check_size("n", n, limit=MAX_DIM // d, per_unit_bytes=8.0 * d, what="the n x d data")
    sparsity = check_int_at_least("sparsity", sparsity, 0)
    if sparsity > d:
        raise ValueError(f"sparsity must be <= d = {d}, got {sparsity}")
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, d))
    w_star = np.zeros(d)
    w_star[:sparsity] = 1.0
    z, y = jnp.asarray(z), jnp.asarray(z @ w_star)

    def model_one(theta, zi):
        u, v = theta[:d], theta[d:]
        return (u * u - v * v) @ zi

    loss, example_loss, model = _squared(model_one, z, y)
    return Problem(
        name="diagonal_net",
        loss=loss,
        theta0=jnp.full(2 * d, 0.5),
        example_loss=example_loss,
        n_examples=n,
        model=model,
        targets=y,
        manifold=lambda th: z @ (th[:d] ** 2 - th[d:] ** 2) - y,
        description=f"diagonal linear network u*u - v*v, d={d}, n={n}, {sparsity}-sparse teacher",
    )


PROBLEMS: dict[str, Callable[..., Problem]] = {
    "quadratic": quadratic,
    "product": product,
    "rosenbrock": rosenbrock,
    "logistic": logistic,
    "linear": linear_overparam,
    "mlp": mlp,
    "uv": uv,
    "hyperbola": hyperbola,
    "diagonal_net": diagonal_net,
}

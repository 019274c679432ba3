r"""Mini-batch implicit regularization of heavy-ball / SGD+M (docs/theory/regularizers.md#minibatch).

Setting: $m$ fixed mini-batch losses $L^{(k)}$, $L = \frac1m\sum_k L^{(k)}$; random reshuffling: epoch $e$ visits the
batches in the order of an independent uniform permutation $\pi_e$. Heavy-ball in momentum-sum form,
$F^{(n)} = \sum_{k\le n}\beta^k g^{(b(n-k))}(\theta_{n-k})$, $b(t) = \pi_{\lfloor t/m\rfloor}(t \bmod m)$.

* :func:`expected_modified_loss`: Cattaneo & Shigida's expected memoryless modified loss (2502.02132 Sec. 5.2)
  $L + \frac{h\beta}{2(1-\beta)^2}\|\nabla L\|^2$
  $+ \frac{h\beta}{2(1-\beta)(1+\beta)}\,\mathbb E_k\|\nabla L^{(k)}-\nabla L\|^2$
  with step $h/(1-\beta)$. Its covariance coefficient $C_{same}(\beta) = \beta/((1-\beta)^2(1+\beta))$ assumes that
  two *different* steps see independent batches; under reshuffling two different steps of one epoch never see the same
  batch, which lowers the coefficient to $C_{same} - w_{B}/(m-1)$ (:func:`reshuffling_coefficients`, exact for finite
  $n$; the paper's value is recovered as $m\to\infty$).
* :func:`expected_memory_correction` (exact expectation of $M^{(n)}$ at a point) and
  :func:`sampled_memory_correction` (Monte Carlo over independent permutations, with standard errors).
* :func:`ghosh_flow`: Ghosh et al.'s piecewise modified flow with historical losses $G_k = \sum_{r\le k}\beta^{k-r}E_r$
  (C7.2), $O(h^2)$-close to SGD+M along a given batch sequence; :func:`sgdm_sequence` runs SGD+M on the same sequence.
"""

from __future__ import annotations

import dataclasses
import functools
from fractions import Fraction
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .._validation import check_int_at_least, check_positive, check_unit_interval
from ._loss import REGULARIZING, ModifiedLoss, Term, _CS, _exact, _frac, grad_norm_sq


@dataclasses.dataclass(frozen=True)
class BatchLosses:
    r"""$m$ fixed mini-batch losses: ``fn(theta, k)`` $= L^{(k)}(\theta)$ for a (traced) integer $k < m$."""

    fn: Callable
    m: int

    def loss(self, theta):
        r"""The full loss $L(\theta) = \frac1m\sum_k L^{(k)}(\theta)$."""
        return jnp.mean(jax.vmap(lambda k: self.fn(theta, k))(jnp.arange(self.m)))

    def grads(self, theta):
        """$(m, d)$: $\\nabla L^{(k)}(\\theta)$."""
        return jax.vmap(lambda k: jax.grad(self.fn)(theta, k))(jnp.arange(self.m))

    def hessians(self, theta):
        """$(m, d, d)$: the Hessians $\\nabla^2 L^{(k)}(\\theta)$ of the $m$ batch losses."""
        return jax.vmap(lambda k: jax.hessian(self.fn)(theta, k))(jnp.arange(self.m))

    def variance(self, theta):
        r"""$\mathbb E_k\|\nabla L^{(k)} - \nabla L\|^2$."""
        g = self.grads(theta)
        return jnp.mean(jnp.sum((g - g.mean(axis=0)) ** 2, axis=1))


def batch_losses(problem, batch_size: int = 1) -> BatchLosses:
    """The fixed partition of a finite-sum :class:`~modeq.problems.Problem` into ``n // batch_size`` consecutive
    mini-batches (``batch_size = 1``: one example per batch, the case of ``MiniBatch(problem, 1)``)."""
    if not getattr(problem, "is_finite_sum", False):
        raise ValueError(f"problem {problem.name!r} has no per-example losses: mini-batches need a finite sum")
    b = check_int_at_least("batch_size", batch_size, 1)
    m = problem.n_examples // b
    if m < 2:
        raise ValueError(f"batch_size must leave at least 2 mini-batches, got {m} for n = {problem.n_examples}")
    idx = jnp.arange(m * b).reshape(m, b)
    return BatchLosses(lambda theta, k: problem.batch_loss(theta, idx[k]), m)


def hb_noise_coefficients(beta) -> dict:
    r"""Exact stationary coefficients (docs/theory/regularizers.md#expected): $C_{same} = \beta/((1-\beta)^2(1+\beta))$,
    $C_{diff} = 2\beta^2/((1-\beta)^3(1+\beta))$, their sum $\beta/(1-\beta)^3$, and the modified-loss coefficients
    $\beta/(2(1-\beta)^2)$ (full batch) and $\beta/(2(1-\beta)(1+\beta))$ (noise), all times $h$."""
    b = _frac(check_unit_interval("beta", beta))
    return {
        "C_same": b / ((1 - b) ** 2 * (1 + b)),
        "C_diff": 2 * b**2 / ((1 - b) ** 3 * (1 + b)),
        "C_total": b / (1 - b) ** 3,
        "full_batch": b / (2 * (1 - b) ** 2),
        "noise": b / (2 * (1 - b) * (1 + b)),
    }


def expected_modified_loss(batches: BatchLosses, *, beta, h) -> ModifiedLoss:
    r"""Expected memoryless modified loss of heavy-ball under random reshuffling (paper form, $n, m\to\infty$):
    $\theta \leftarrow \theta - \frac{h}{1-\beta}\nabla\tilde L$ with
    $\tilde L = L + \frac{h\beta}{2(1-\beta)^2}\|\nabla L\|^2$
    $+ \frac{h\beta}{2(1-\beta)(1+\beta)}\mathbb E_k\|\nabla L^{(k)}-\nabla L\|^2$."""
    h = check_positive("h", h)
    c = hb_noise_coefficients(beta)
    loss = batches.loss
    terms = (
        Term("grad_norm_sq", "||grad L||^2", float(c["full_batch"]) * h, _exact(c["full_batch"]),
             grad_norm_sq(loss), REGULARIZING, _CS),
        Term("minibatch_variance", "E_k ||grad L^(k) - grad L||^2", float(c["noise"]) * h, _exact(c["noise"]),
             batches.variance, REGULARIZING, _CS + " Sec. 5.2 (expected correction, random reshuffling)"),
    )
    b = _frac(beta)
    return ModifiedLoss("heavy_ball (mini-batch, expected)", loss, h, "memoryless", float(1 / (1 - b)),
                        str(1 / (1 - b)), terms,
                        note="expectation over reshuffling; different steps treated as independent (m -> infinity)")


def _weights(beta: float, n: int) -> np.ndarray:
    r"""$W[a, c]$: coefficient of $\nabla g^{(b(a))} g^{(b(c))}$ in $M^{(n)}/h$, $a, c < n$."""
    a = np.arange(n)[:, None]
    c = np.arange(n)[None, :]
    lo = np.maximum(a, c)
    # sum_{s=lo}^{n-1} beta^(s-c) = beta^(lo-c) (1 - beta^(n-lo)) / (1 - beta)
    inner = beta ** (lo - c) * (1.0 - beta ** (n - lo)) / (1.0 - beta)
    return beta ** (n - a) * inner


def reshuffling_coefficients(beta, m: int, n: int) -> dict:
    r"""Exact weights of $\mathbb E_\pi M^{(n)}/h$ under reshuffling with $m$ batches per epoch, epochs starting at
    step 0: ``same`` ($a = c$), ``same_epoch`` ($a\ne c$ in one epoch), ``other_epoch``; and the effective coefficient
    of the covariance term $\mathbb E[(\nabla g^{(k)}-\nabla\bar g)(g^{(k)}-\bar g)]$:
    ``covariance = same - same_epoch/(m-1)`` (paper: $C_{same}$)."""
    beta = check_unit_interval("beta", beta)
    m = check_int_at_least("m", m, 2)
    n = check_int_at_least("n", n, 1)
    W = _weights(beta, n)
    t = np.arange(n)
    same_t = t[:, None] == t[None, :]
    same_e = (t[:, None] // m) == (t[None, :] // m)
    wa = float(W[same_t].sum())
    wb = float(W[same_e & ~same_t].sum())
    wc = float(W[~same_e].sum())
    return {"same": wa, "same_epoch": wb, "other_epoch": wc, "total": wa + wb + wc,
            "covariance": wa - wb / (m - 1)}


def expected_memory_correction(batches: BatchLosses, theta, *, beta, h, n: int) -> dict:
    r"""$\mathbb E_\pi M^{(n)}(\theta)$ exactly (finite $n$, $m$ batches per epoch), and the paper's
    asymptotic formula $h[\frac{\beta}{(1-\beta)^3}\bar H\bar g + C_{same}\,\mathrm{Cov}]$ for comparison."""
    g = np.asarray(batches.grads(theta))
    H = np.asarray(batches.hessians(theta))
    m = batches.m
    A = np.einsum("kij,kj->i", H, g) / m
    Hb, gb = H.mean(axis=0), g.mean(axis=0)
    C = Hb @ gb
    B = (m * m * C - m * A) / (m * (m - 1))
    w = reshuffling_coefficients(beta, m, n)
    exact = h * (w["same"] * A + w["same_epoch"] * B + w["other_epoch"] * C)
    c = hb_noise_coefficients(beta)
    paper = h * (float(c["C_total"]) * C + float(c["C_same"]) * (A - C))
    return {"exact": exact, "paper": paper, "weights": w, "A": A, "B": B, "C": C}


def sampled_memory_correction(batches: BatchLosses, theta, *, beta, h, n: int, samples: int, seed: int = 0,
                              chunk: int = 2000) -> dict:
    r"""Monte Carlo of $M^{(n)}(\theta) = h\sum_{k=1}^n\beta^k\nabla g^{(b(n-k))}\sum_{s=n-k}^{n-1}F^{(s)}(\theta)$ over
    ``samples`` independent batch sequences (each epoch an independent uniform permutation): mean and standard error
    per coordinate."""
    samples = check_int_at_least("samples", samples, 2)
    g = np.asarray(batches.grads(theta))
    H = np.asarray(batches.hessians(theta))
    m = batches.m
    W = _weights(float(beta), n)
    rng = np.random.default_rng(seed)
    epochs = -(-n // m)
    total, total_sq, done = 0.0, 0.0, 0
    while done < samples:
        s = min(chunk, samples - done)
        perms = np.argsort(rng.random((s, epochs, m)), axis=-1).reshape(s, epochs * m)[:, :n]
        V = np.einsum("ac,scd->sad", W, g[perms])
        M = h * np.einsum("sade,sae->sd", H[perms], V)
        total = total + M.sum(axis=0)
        total_sq = total_sq + (M * M).sum(axis=0)
        done += s
    mean = total / samples
    var = (total_sq / samples - mean**2) * samples / (samples - 1)
    return {"mean": mean, "stderr": np.sqrt(var / samples), "samples": samples}


# --- Ghosh et al. piecewise flow -------------------------------------------------------------------------------------


def sgdm_sequence(batches: BatchLosses, theta0, sequence: Sequence[int], *, beta, h) -> np.ndarray:
    r"""SGD+M $x_{k+1} = x_k - h\nabla E_k(x_k) + \beta(x_k - x_{k-1})$, $x_{-1} = x_0$, $E_k = L^{(\mathrm{seq}[k])}$:
    the iterates $x_0..x_K$ (heavy-ball at rest)."""
    x0 = jnp.asarray(theta0, jnp.float64)
    return np.asarray(_sgdm_run(batches.fn, x0, jnp.asarray(sequence), jnp.asarray(beta, jnp.float64),
                                jnp.asarray(h, jnp.float64)))


@functools.partial(jax.jit, static_argnums=(0,))
def _sgdm_run(fn, x0, seq, beta, h):
    grad = jax.grad(fn)

    def body(carry, k):
        x, mom = carry
        mom = beta * mom + grad(x, k)
        return (x - h * mom, mom), x

    (xn, _), xs = jax.lax.scan(body, (x0, jnp.zeros_like(x0)), seq)
    return jnp.concatenate([xs, xn[None]])


def ghosh_flow(batches: BatchLosses, theta0, sequence: Sequence[int], *, beta, h, igr: bool = True,
               substeps: int = 8) -> np.ndarray:
    r"""Ghosh et al.'s piecewise modified flow (docs/theory/regularizers.md#ghosh), values at $t_k = kh$, $k = 0..K$:
    on $[t_k, t_{k+1})$, $x' = -\nabla[G_k + \frac h4(\|\nabla G_k\|^2 + 2\sum_{r<k}\beta^{k-r}\|\nabla G_r\|^2)]$,
    $G_k = \sum_{r\le k}\beta^{k-r}E_r$. ``igr=False`` drops the $h$ terms ($x' = -\nabla G_k$, first order).
    Implemented with $\nabla G_k = \sum_j W_k[j]\nabla L^{(j)}$, $W_k = \beta W_{k-1} + e_{\mathrm{seq}[k]}$ and the
    history matrix $C_k = \beta(C_{k-1} + W_{k-1}W_{k-1}^\top)$; classical RK4 with ``substeps`` steps per interval."""
    x0 = jnp.asarray(theta0, jnp.float64)
    out = _ghosh_run(batches.fn, batches.m, bool(igr), int(substeps), x0, jnp.asarray(sequence),
                     jnp.asarray(beta, jnp.float64), jnp.asarray(h, jnp.float64))
    return np.asarray(out)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3))
def _ghosh_run(fn, m, igr, substeps, x0, sequence, beta, h):
    grad = jax.grad(fn)
    ks = jnp.arange(m)

    def field(x, Wk, Ck):
        G = jax.vmap(lambda k: grad(x, k))(ks)  # (m, d)
        out = Wk @ G
        if igr:
            K = jnp.outer(Wk, Wk) + 2.0 * Ck
            U = K @ G  # u_j = sum_i K[j, i] g_i
            hv = jax.vmap(lambda k, u: jax.jvp(lambda y: grad(y, k), (x,), (u,))[1])(ks, U)
            out = out + 0.5 * h * hv.sum(axis=0)
        return -out

    dt = h / substeps

    def interval(carry, k):
        x, Wprev, Cprev = carry
        Ck = beta * (Cprev + jnp.outer(Wprev, Wprev))
        Wk = beta * Wprev + jax.nn.one_hot(k, m)

        def rk4(y, _):
            k1 = field(y, Wk, Ck)
            k2 = field(y + 0.5 * dt * k1, Wk, Ck)
            k3 = field(y + 0.5 * dt * k2, Wk, Ck)
            k4 = field(y + dt * k3, Wk, Ck)
            return y + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4), None

        xn, _ = jax.lax.scan(rk4, x, None, length=substeps)
        return (xn, Wk, Ck), x

    init = (x0, jnp.zeros(m), jnp.zeros((m, m)))
    (xn, _, _), xs = jax.lax.scan(interval, init, sequence)
    return jnp.concatenate([xs, xn[None]])


def reshuffled_sequence(m: int, steps: int, seed: int = 0) -> np.ndarray:
    """``steps`` batch indices: consecutive epochs, each an independent uniform permutation of ``range(m)``."""
    rng = np.random.default_rng(seed)
    epochs = -(-steps // m)
    return np.concatenate([rng.permutation(m) for _ in range(epochs)])[:steps]

r"""Values of every implicit-regularization term along a run of the optimizer (``modeq regularizer``)."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from .._validation import check_int_at_least, check_positive
from ..optimizers._simulate import simulate
from ..optimizers._spec import Optimizer
from ._loss import ModifiedLoss, modified_loss


@dataclasses.dataclass
class RegularizerReport:
    """The modified loss and, at each saved step ``steps[i]``, the loss, every term ``c R`` and the modified loss."""

    modified: ModifiedLoss
    steps: list
    values: dict  # name -> list of floats (loss, each term, modified_loss, grad_norm, grad_one_norm)
    diverged_at: int

    def to_dict(self) -> dict:
        """JSON-ready record: the modified loss, ``steps``, ``values`` (name -> list) and ``diverged_at``."""
        return {
            "modified_loss": self.modified.to_dict(),
            "steps": self.steps,
            "values": self.values,
            "diverged_at": self.diverged_at,
        }

    def table(self, every: Optional[int] = None) -> str:
        """A plain-text table, one row per saved step (every ``every``-th row if given), one column per value."""
        names = list(self.values)
        rows = ["step " + " ".join(f"{n:>16s}" for n in names)]
        idx = range(len(self.steps)) if every is None else range(0, len(self.steps), every)
        for i in idx:
            rows.append(f"{self.steps[i]:4d} " + " ".join(f"{self.values[n][i]:16.8g}" for n in names))
        return "\n".join(rows)


def regularizer_report(
    optimizer: Optimizer,
    loss: Callable,
    theta0,
    *,
    h,
    steps: int,
    form: str = "ode",
    save_every: Optional[int] = None,
    m0="zero",
) -> RegularizerReport:
    r"""Run ``optimizer`` for ``steps`` steps from ``theta0`` and evaluate the modified loss
    (:func:`~modeq.regularizers.modified_loss`) term by term at every saved iterate.

    ``save_every`` (default: so that at most about 200 points are saved, always including the last step).
    Also records $\|\nabla L\|_2$ and $\|\nabla L\|_1$ (the quantity the adaptive methods' terms act on).
    """
    h = check_positive("h", h)
    steps = check_int_at_least("steps", steps, 1)
    modified = modified_loss(optimizer, loss, h=h, form=form)
    theta0 = jnp.asarray(theta0, dtype=jnp.float64)
    traj = simulate(optimizer, loss, theta0, steps, h=h, m0=m0)
    every = max(1, steps // 200) if save_every is None else check_int_at_least("save_every", save_every, 1)
    idx = list(range(0, steps + 1, every))
    if idx[-1] != steps:
        idx.append(steps)
    thetas = traj.theta[jnp.asarray(idx)]
    grad = jax.grad(loss)

    def evaluate(theta):
        g = grad(theta)
        out = {"loss": loss(theta)}
        for term in modified.terms:
            out[term.name] = term.value(theta)
        out["modified_loss"] = modified(theta)
        out["grad_norm"] = jnp.linalg.norm(g)
        out["grad_one_norm"] = jnp.sum(jnp.abs(g))
        return out

    vals = jax.jit(jax.vmap(evaluate))(thetas)
    order = ["loss"] + [t.name for t in modified.terms] + ["modified_loss", "grad_norm", "grad_one_norm"]
    values = {k: [float(x) for x in np.asarray(vals[k])] for k in order}
    return RegularizerReport(modified, idx, values, int(traj.diverged_at))

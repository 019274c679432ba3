r"""Backward error analysis of a one-step map, to any order, matrix-free.

For a smooth one-step map $\theta_{n+1} = \Psi_h(\theta_n)$ there is a unique formal vector field
$f_h = f_1 + h f_2 + h^2 f_3 + \dots$ whose exact time-$h$ flow is $\Psi_h$ (Hairer, Lubich & Wanner,
*Geometric Numerical Integration*, ch. IX). modeq computes it through the logarithm of the Koopman operator
$U\varphi = \varphi\circ\Psi_h$: since $U = \exp(h\,\mathcal L_{f_h})$ with $\mathcal L_f\varphi = \varphi' f$,

$$ h\, f_h(\theta) = \log(U)\,\mathrm{id}\,(\theta) = \sum_{m\ge1} \frac{(-1)^{m+1}}{m}\, \Delta^m(\theta), \qquad
   \Delta^m(\theta) = \sum_{k=0}^m \binom mk (-1)^{m-k}\, \Psi_h^k(\theta), $$

the $m$-th forward difference of the orbit $\theta, \Psi_h(\theta), \Psi_h^2(\theta), \dots$. As $\Delta^m = O(h^m)$,
the coefficient of $h^k$ in $h f_h$ involves only $m \le k$, so the order-$R$ field
$f_h^{[R]} = \sum_{k=1}^R h^{k-1} f_k$ (global error $O(h^R)$) needs $R$ iterates of $\Psi_h$ and $R$ nested JVPs
in $h$ (see :mod:`modeq.series._taylor`). No derivative tensor of the loss is ever formed.

Convention: "order $R$" keeps $f_1, \dots, f_R$ (terms through $h^{R-1}$); order 1 is the rescaled gradient flow.
"""

from __future__ import annotations

import math
from typing import Callable

import jax.numpy as jnp

from ._taylor import taylor_coefficients

StepMap = Callable  # (theta, h) -> theta_next


def log_of_orbit(orbit: list):
    r"""$\sum_{m=1}^{M}\frac{(-1)^{m+1}}{m}\Delta^m$ of an orbit $[\theta_0, \dots, \theta_M]$.

    This is $h f_h(\theta_0) + O(h^{M+1})$: used with ``h`` Taylor-expanded by :func:`modified_field_coefficients`,
    or at a numerical ``h`` as a cheap non-polynomial field of the same order ("direct" truncation).
    """
    terms = len(orbit) - 1
    total = jnp.zeros_like(orbit[0])
    for m in range(1, terms + 1):
        delta = sum(math.comb(m, k) * (-1) ** (m - k) * orbit[k] for k in range(m + 1))
        total = total + ((-1) ** (m + 1) / m) * delta
    return total


def log_orbit(step_map: StepMap, theta, h, terms: int):
    """:func:`log_of_orbit` of the orbit of ``step_map`` from ``theta`` (``terms`` steps)."""
    orbit = [theta]
    for _ in range(terms):
        orbit.append(step_map(orbit[-1], h))
    return log_of_orbit(orbit)


def modified_field_coefficients(orbit_fn: Callable, theta, order: int) -> list:
    r"""$[f_1(\theta), \dots, f_R(\theta)]$, the coefficients of the modified field at ``theta``.

    ``orbit_fn(theta, h, R)`` returns the orbit $[\theta, \Psi_h(\theta), \dots, \Psi_h^R(\theta)]$ of a one-step map
    smooth in $(\theta, h)$ with $\Psi_0 = \mathrm{id}$ (accurate through $h^R$).
    """
    coefficients = taylor_coefficients(lambda h: log_of_orbit(orbit_fn(theta, h, order)), order)
    return coefficients[1:]


def map_coefficients(step_map: StepMap, theta, order: int) -> list:
    r"""$[\theta, d_1(\theta), \dots, d_R(\theta)]$ with $\Psi_h(\theta) = \theta + \sum_k h^k d_k(\theta) + O(h^{R+1})$."""
    return taylor_coefficients(lambda h: step_map(theta, h), order)

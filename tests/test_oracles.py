"""Gradient oracles: sampling without replacement, determinism, and first/second moments against ``covariance``.

Monte Carlo tests (``@pytest.mark.statistical``) use fixed seeds and accept a deviation of 5 standard errors, the
standard error of each entry being estimated from the same draws.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from modeq.problems import (
    SVAG,
    FullBatch,
    GaussianNGOS,
    LabelNoise,
    MiniBatch,
    linear_overparam,
    logistic,
    rosenbrock,
)

DRAWS = 20_000
K_SE = 5.0


def draws(oracle, theta, n_draws=DRAWS, seed=0, step=0):
    """``n_draws`` independent gradients at ``theta``: one run key each, the same step index."""
    keys = jax.random.split(jax.random.key(seed), n_draws)
    return np.asarray(jax.jit(jax.vmap(lambda k: oracle(theta, k, step)))(keys))


def assert_moments(samples, mean, cov, k=K_SE):
    """Sample mean and covariance (about the known mean) within ``k`` standard errors of ``mean`` and ``cov``."""
    samples, mean, cov = np.asarray(samples), np.asarray(mean), np.asarray(cov)
    n = samples.shape[0]
    scale = max(float(np.max(np.abs(cov))), 1e-300)
    se_mean = np.sqrt(np.clip(np.diag(cov), 0.0, None) / n)
    assert np.all(np.abs(samples.mean(axis=0) - mean) <= k * se_mean + 1e-12 * scale), "mean"
    c = samples - mean
    products = c[:, :, None] * c[:, None, :]
    se_cov = products.std(axis=0) / np.sqrt(n)
    dev = np.abs(products.mean(axis=0) - cov)
    worst = np.max(dev / (se_cov + 1e-300))
    assert np.all(dev <= k * se_cov + 1e-12 * scale), f"covariance: max deviation / SE {worst:.2f}"


# --- mini-batches without replacement --------------------------------------------------------------------------------


def epoch_indices(oracle, key, epochs):
    steps = oracle.steps_per_epoch * epochs
    idx = jax.jit(jax.vmap(lambda n: oracle.indices(key, n)))(jnp.arange(steps))
    return np.asarray(idx).reshape(epochs, -1)


def test_minibatch_every_example_once_per_epoch():
    p = logistic(n=32)
    oracle = MiniBatch(p, 4)
    assert oracle.steps_per_epoch == 8
    for seed in range(3):
        per_epoch = epoch_indices(oracle, jax.random.key(seed), epochs=5)
        for e in range(5):
            np.testing.assert_array_equal(np.sort(per_epoch[e]), np.arange(32))  # a permutation
        for a, b in itertools.combinations(range(5), 2):
            assert not np.array_equal(per_epoch[a], per_epoch[b])  # epochs are reshuffled


def test_minibatch_drop_last():
    """B does not divide n: each epoch uses floor(n/B) disjoint batches, so no example twice in an epoch."""
    oracle = MiniBatch(logistic(n=32), 5)
    assert oracle.steps_per_epoch == 6
    per_epoch = epoch_indices(oracle, jax.random.key(1), epochs=4)
    for e in range(4):
        assert per_epoch[e].size == 30 and np.unique(per_epoch[e]).size == 30


def test_minibatch_gradient_is_the_batch_mean():
    p = logistic(n=32)
    oracle = MiniBatch(p, 4)
    key, theta = jax.random.key(3), p.theta0
    per_example = np.asarray(jax.jit(oracle.per_example_gradients)(theta))
    np.testing.assert_allclose(per_example[5], jax.jit(jax.grad(p.example_loss))(theta, 5), rtol=1e-14)
    np.testing.assert_allclose(per_example.mean(axis=0), jax.jit(jax.grad(p.loss))(theta), rtol=1e-12, atol=1e-15)
    steps = jnp.array([0, 7, 8, 21])
    idx = np.asarray(jax.jit(jax.vmap(lambda n: oracle.indices(key, n)))(steps))
    grads = jax.jit(jax.vmap(lambda n: oracle(theta, key, n)))(steps)
    np.testing.assert_allclose(grads, per_example[idx].mean(axis=1), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MiniBatch(logistic(n=16), 4),
        lambda: GaussianNGOS(logistic().loss, sigma=0.5),
        lambda: LabelNoise(linear_overparam(), 0.3),
        lambda: SVAG(GaussianNGOS(logistic().loss), 4.0),
    ],
    ids=["minibatch", "gaussian", "label_noise", "svag"],
)
def test_same_key_same_gradient(make):
    oracle = make()
    theta = jnp.linspace(-0.5, 0.5, 10 if isinstance(oracle, LabelNoise) else 3)
    k1, k2 = jax.random.key(11), jax.random.key(12)
    call = jax.jit(lambda key, n: oracle(theta, key, n))
    np.testing.assert_array_equal(call(k1, 5), call(k1, 5))
    assert not np.allclose(call(k1, 5), call(k2, 5))
    assert not np.allclose(call(k1, 5), call(k1, 6))  # fresh randomness every step


def test_full_batch_is_the_gradient():
    p = rosenbrock()
    oracle = FullBatch(p.loss)
    assert not oracle.stochastic
    theta = jnp.array([0.3, -0.7])
    np.testing.assert_array_equal(oracle(theta, jax.random.key(0), 3), jax.grad(p.loss)(theta))
    np.testing.assert_array_equal(oracle.covariance(theta), np.zeros((2, 2)))


def test_minibatch_covariance_exact_enumeration():
    """Sampling B of n without replacement: the closed form equals the average over all C(n, B) subsets."""
    p = logistic(n=8)
    oracle = MiniBatch(p, 2)
    theta = p.theta0
    mean = np.asarray(jax.jit(jax.grad(p.loss))(theta))
    per = np.asarray(jax.jit(oracle.per_example_gradients)(theta))
    subsets = list(itertools.combinations(range(8), 2))
    batch_grads = np.array([per[list(s)].mean(axis=0) for s in subsets])
    np.testing.assert_allclose(batch_grads.mean(axis=0), mean, rtol=1e-12, atol=1e-15)
    exact = (batch_grads - mean).T @ (batch_grads - mean) / len(subsets)
    np.testing.assert_allclose(jax.jit(oracle.covariance)(theta), exact, rtol=1e-12, atol=1e-15)
    full = MiniBatch(p, 8)  # B = n: no noise
    np.testing.assert_allclose(jax.jit(full.covariance)(theta), 0.0, atol=1e-15)


# --- Monte Carlo moments ---------------------------------------------------------------------------------------------


def _cov_fn(theta):
    a = jnp.array([[1.0, 0.3, 0.0], [0.3, 0.5, -0.2], [0.0, -0.2, 0.8]])
    return a + jnp.diag(theta**2)


@pytest.mark.statistical
@pytest.mark.parametrize(
    "make",
    [
        lambda loss: GaussianNGOS(loss, sigma=0.7),
        lambda loss: GaussianNGOS(loss, sigma=0.7, covariance_fn=_cov_fn),
        lambda loss: GaussianNGOS(
            loss, sigma=1.3, covariance_sqrt=lambda th: jnp.array([[1.0, 0.0], [0.5, 0.2], [th[0], 1.0]])
        ),
    ],
    ids=["identity", "covariance_fn", "covariance_sqrt"],
)
def test_gaussian_ngos_moments(make):
    p = logistic()
    oracle = make(p.loss)
    theta = p.theta0
    cov = np.asarray(oracle.covariance(theta))
    np.testing.assert_allclose(cov, cov.T, atol=1e-15)
    assert np.min(np.linalg.eigvalsh(cov)) >= -1e-12
    if oracle.covariance_fn is not None:
        np.testing.assert_allclose(cov, 0.49 * np.asarray(_cov_fn(theta)), rtol=1e-12, atol=1e-14)
    assert_moments(draws(oracle, theta), jax.grad(p.loss)(theta), cov)


@pytest.mark.statistical
@pytest.mark.parametrize("step", [0, 13])
def test_minibatch_moments(step):
    p = logistic(n=8)
    oracle = MiniBatch(p, 2)
    theta = p.theta0
    assert_moments(draws(oracle, theta, step=step), jax.grad(p.loss)(theta), oracle.covariance(theta))


@pytest.mark.statistical
def test_label_noise_moments():
    p = linear_overparam(n=5, d=10)
    oracle = LabelNoise(p, 0.5)
    theta = p.theta0
    cov = np.asarray(oracle.covariance(theta))
    x = np.asarray(jax.vmap(lambda i: jax.grad(p.model)(theta, i))(jnp.arange(5)))
    np.testing.assert_allclose(cov, (0.5 / 5) ** 2 * x.T @ x, rtol=1e-12)
    assert np.linalg.matrix_rank(cov, tol=1e-12 * np.abs(cov).max()) == 5
    assert_moments(draws(oracle, theta), jax.grad(p.loss)(theta), cov)


@pytest.mark.statistical
@pytest.mark.parametrize(
    "make_base",
    [lambda p: GaussianNGOS(p.loss, sigma=0.5, covariance_fn=_cov_fn), lambda p: MiniBatch(p, 2)],
    ids=["gaussian", "minibatch"],
)
def test_svag_moments(make_base):
    """SVAG with l = 4: same mean, covariance 4 times the base covariance."""
    p = logistic(n=8)
    base = make_base(p)
    oracle = SVAG(base, 4.0)
    theta = p.theta0
    np.testing.assert_allclose(oracle.covariance(theta), 4.0 * np.asarray(base.covariance(theta)), rtol=1e-15)
    samples = draws(oracle, theta, seed=5)
    assert_moments(samples, jax.grad(p.loss)(theta), 4.0 * np.asarray(base.covariance(theta)))
    # and it is not the base covariance
    c = samples - np.asarray(jax.grad(p.loss)(theta))
    emp = c.T @ c / len(c)
    base_cov = np.asarray(base.covariance(theta))
    assert np.trace(emp) > 3.0 * np.trace(base_cov)


# --- validation ------------------------------------------------------------------------------------------------------


def test_oracle_validation():
    p = logistic(n=8)
    with pytest.raises(ValueError, match="batch_size"):
        MiniBatch(p, 9)
    with pytest.raises(ValueError, match="batch_size"):
        MiniBatch(p, 0)
    with pytest.raises(ValueError, match="finite sum"):
        MiniBatch(rosenbrock(), 1)
    with pytest.raises(ValueError, match="model"):
        LabelNoise(p, 0.1)  # logistic is not a squared loss
    with pytest.raises(ValueError, match="delta"):
        LabelNoise(linear_overparam(), 0.0)
    with pytest.raises(ValueError, match="sigma"):
        GaussianNGOS(p.loss, sigma=-1.0)
    with pytest.raises(ValueError, match="l must"):
        SVAG(GaussianNGOS(p.loss), 0.5)


def test_oracles_are_static_jit_arguments():
    """simulate passes the oracle to ``eqx.filter_jit`` as a static argument: it must be hashable, and equal oracles
    must hash equal (one compile for repeated runs)."""
    from modeq import optimizers as mo

    p = logistic(n=8)
    for make in (lambda: MiniBatch(p, 2), lambda: SVAG(MiniBatch(p, 2), 4.0), lambda: GaussianNGOS(p.loss, 0.1)):
        a, b = make(), make()
        assert a == b and hash(a) == hash(b)
    lab = linear_overparam()
    assert hash(LabelNoise(lab, 0.1)) == hash(LabelNoise(lab, 0.1))
    traj = mo.simulate(
        mo.heavy_ball(0.5), p.loss, p.theta0, 10, h=0.1, oracle=SVAG(MiniBatch(p, 2), 4.0), key=jax.random.key(0)
    )
    assert np.all(np.isfinite(np.asarray(traj.theta))) and int(traj.diverged_at) == -1

"""Global numerical configuration.

modeq works in float64 everywhere: importing :mod:`modeq` calls
``jax.config.update("jax_enable_x64", True)`` before any array is created. Without it JAX silently downcasts
float64 requests to float32, and adaptive solvers at rtol = 1e-12 fail (see shared/STACK.md, pitfall 1).
"""

import jax

jax.config.update("jax_enable_x64", True)

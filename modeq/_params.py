"""Turn ``--optimizer NAME --param k=v`` into an :class:`~modeq.optimizers.Optimizer` and a step size."""

from __future__ import annotations

import inspect
from typing import Sequence

from .optimizers._catalog import OPTIMIZERS

STEP_SIZE_NAMES = ("h", "learning_rate", "lr", "eta")


def _value(option: str, key: str, text: str):
    low = text.strip().lower()
    if not low:
        raise ValueError(f"{option}: {key!r} has no value; write {key}=VALUE")
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    try:
        return float(text)
    except ValueError:
        return text.strip()


def parse_params(items: Sequence[str], *, option: str = "param") -> dict:
    """``["beta=0.9", "h=0.01"]`` -> ``{"beta": 0.9, "h": 0.01}`` (numbers, booleans or strings).

    Each item may hold several comma-separated ``key=value`` pairs. A key given twice (``beta=0.5`` and
    ``beta=0.7``) is an error naming both, never "the last one wins"; so is an empty value (``sigma=``).
    ``option`` names the command-line option in the messages (``param``, ``noise-param``).
    """
    out: dict = {}
    raw: dict = {}
    for item in items or ():
        for part in str(item).split(","):
            if not part.strip():
                continue
            key, eq, val = part.partition("=")
            key = key.strip()
            if not eq or not key:
                raise ValueError(f"{option}: expected key=value, got {part.strip()!r}")
            if key in out:
                raise ValueError(f"{option}: {key!r} given twice ({key}={raw[key]} and {key}={val.strip()}); give it once")
            out[key] = _value(option, key, val)
            raw[key] = val.strip()
    return out


def build_optimizer(name: str, params: dict, *, default_h: float | None = None):
    """Build the optimizer ``name`` from ``params``; returns ``(optimizer, h)``.

    ``h`` (aliases ``learning_rate``, ``lr``, ``eta``) is the step size; every other key must be an argument of the
    optimizer's constructor (``beta`` for HB/Nesterov/SGDM, optax's names ``b1``, ``b2``, ``eps``, ``eps_root``,
    ``weight_decay``, ``decay`` for the rest). Two aliases of the step size at once (``h`` and ``lr``) are an error
    naming both. With ``default_h=None`` the caller takes its step sizes elsewhere (``--h``, ``--eta``), so a step size
    among ``params`` is an error too, never silently ignored.
    """
    if not isinstance(name, str):
        raise TypeError(f"optimizer: expected a name, got {type(name).__name__}")
    if ":" in name:
        return _optax_optimizer(name.strip(), dict(params), default_h)
    key = name.strip().lower().replace("-", "_")
    if key not in OPTIMIZERS:
        raise ValueError(f"optimizer: unknown {name!r}; valid: {', '.join(sorted(OPTIMIZERS))}")
    params = dict(params)
    h = _step_size(params, default_h)
    ctor = OPTIMIZERS[key]
    sig = inspect.signature(ctor)
    accepts_kwargs = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    if not accepts_kwargs:
        valid = [p for p in sig.parameters]
        unknown = [k for k in params if k not in valid]
        if unknown:
            raise ValueError(
                f"param: unknown parameter {unknown[0]!r} for {key}; valid: h (learning_rate), {', '.join(valid)}"
            )
    return ctor(**params), h


def _step_size(params: dict, default_h):
    """Pop the step size (``h`` or an alias) from ``params``; two aliases, or one where the command takes its step
    sizes elsewhere (``default_h=None``), are errors naming them."""
    given = [alias for alias in STEP_SIZE_NAMES if alias in params]
    if len(given) > 1:
        raise ValueError(f"param: {given[0]!r} and {given[1]!r} both set the step size; give one of them")
    if given and default_h is None:
        raise ValueError(
            f"param: {given[0]!r} is not a hyperparameter here: this command takes its step sizes from --h "
            f"(or --eta); remove --param {given[0]}"
        )
    return params.pop(given[0]) if given else default_h


def _optax_optimizer(spec: str, params: dict, default_h):
    """``optax:NAME`` (an optax alias, hyperparameters from ``--param``), ``optax:EXPR`` (an expression in ``h`` over
    optax's names, e.g. ``optax:chain(scale_by_rms(decay=0.9), scale(-h))``) or ``file.py:factory`` /
    ``module:factory`` (a function ``h -> GradientTransformation``, keyword hyperparameters from ``--param``)."""
    import ast
    import functools

    from .optimizers._optax import from_optax

    h = _step_size(params, default_h)
    text = [k for k, v in params.items() if isinstance(v, str)]
    if text:
        raise ValueError(f"param: {text[0]}={params[text[0]]!r} is not a number or true/false (the hyperparameters of "
                         f"an optax optimizer given with --param must be)")
    prefix, _, rest = spec.partition(":")
    if prefix.lower() == "optax":
        try:
            import optax
        except ImportError:  # pragma: no cover - optax is a dependency
            raise ValueError("optimizer: optax is not installed (pip install optax)") from None
        expr = rest.strip()
        if not expr:
            raise ValueError("optimizer: 'optax:' needs a name or an expression, e.g. optax:adam or "
                             "'optax:chain(scale_by_rms(decay=0.9), scale(-h))'")
        if expr.isidentifier():
            factory = getattr(optax, expr, None)
            if not callable(factory):
                raise ValueError(f"optimizer: optax has no optimizer {expr!r} (e.g. optax:adam, optax:sgd, optax:lion)")
            try:
                first = next(iter(inspect.signature(factory).parameters), None)
            except (TypeError, ValueError):
                first = None
            if first != "learning_rate":
                raise ValueError(f"optimizer: optax.{expr} is a transformation, not an optimizer (its first argument is "
                                 f"{first!r}, not learning_rate); write an expression in h, e.g. "
                                 f"'optax:chain({expr}(...), scale(-h))'")
            make = functools.partial(factory, **params) if params else factory
            label = spec + "".join(f" --param {k}={v}" for k, v in params.items())
        else:
            if params:
                raise ValueError(f"param: {next(iter(params))!r}: an optax expression takes its hyperparameters "
                                 "inside the expression; remove --param")
            try:
                tree = ast.parse(expr, mode="eval")
            except SyntaxError as exc:
                raise ValueError(f"optimizer: the optax expression {expr!r} is not valid Python: {exc.msg}") from None
            names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
            if "h" not in names:
                raise ValueError(f"optimizer: the optax expression {expr!r} must use the step size h (e.g. "
                                 "scale(-h) or sgd(h, momentum=0.9))")
            namespace = {k: getattr(optax, k) for k in dir(optax) if not k.startswith("_")}
            namespace["optax"] = optax
            code = compile(tree, "<optax expression>", "eval")

            def make(h, _code=code, _ns=namespace):
                return eval(_code, {"__builtins__": {}}, {**_ns, "h": h})  # the user's own expression

            label = f"'{spec}'"
        return _built(make, f"optax:{expr}" if expr.isidentifier() else "optax", label), h
    from .problems._spec import _load_attr

    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise ValueError(f"optimizer: expected a name, optax:NAME, 'optax:EXPR' or file.py:factory, got {spec!r}")
    try:
        _, factory = _load_attr(spec)
    except ValueError as exc:
        raise ValueError("optimizer: " + str(exc).removeprefix("loss: ")) from None
    if not callable(factory):
        raise ValueError(f"optimizer: {spec!r} is not a function h -> GradientTransformation")
    make = functools.partial(factory, **params) if params else factory
    label = spec + "".join(f" --param {k}={v}" for k, v in params.items())
    return _built(make, spec, label), h


def _built(make, name, label):
    """``from_optax`` with its messages under the CLI's option name (``optimizer: ...``)."""
    from .optimizers._optax import from_optax

    try:
        return from_optax(make, name=name, label=label)
    except (ValueError, TypeError) as exc:
        raise ValueError("optimizer: " + str(exc).removeprefix("make: ")) from None

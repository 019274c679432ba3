"""The verdict policy (:mod:`modeq._verdict`, kept below :mod:`modeq.compare` in the import graph), re-exported."""

from .._verdict import (  # noqa: F401
    CONSISTENT,
    DIVERGED,
    MC_TOO_LARGE,
    NOT_CONSISTENT,
    OUTSIDE_REGIME,
    REGIME_LIMIT,
    VERDICTS,
    Verdict,
    check_sweep,
    finite_or_none,
    jsonable,
    order_verdict,
)

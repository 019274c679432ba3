r"""Studies: one function per job, each returning a result object with the data, the diagnostics, the warnings and a
:class:`Verdict`. The command line and the HTML report call these and render their results; nothing they print is
computed anywhere else.
"""

from ._verdict import (
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

__all__ = [
    "Verdict", "order_verdict", "check_sweep", "jsonable", "finite_or_none", "VERDICTS", "REGIME_LIMIT",
    "CONSISTENT", "NOT_CONSISTENT", "OUTSIDE_REGIME", "MC_TOO_LARGE", "DIVERGED",
]

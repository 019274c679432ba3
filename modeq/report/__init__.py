"""One self-contained HTML page for one loss and one optimizer (``modeq report``).

:func:`run_report` runs the three analyses with the same library calls as the single-purpose commands -- a
convergence study (:func:`modeq.compare.compare_flow`, as ``modeq compare``), the principal flow
(:func:`modeq.flows.principal_flow_solve`, as ``modeq principal-flow``; GD and heavy-ball only) and the implicit
regularizer (:func:`modeq.regularizers.regularizer_report`, as ``modeq regularizer``) -- and :func:`render_html` turns
the result into one HTML file: tables, figures as base64-embedded PNGs (matplotlib Agg), the exact command, the
versions, the machine and the fitted orders with their 95% intervals. No network access is needed to view it.
"""

from ._html import render_html, write_html
from ._run import Report, Section, default_flows, default_hs, default_T, run_report

__all__ = ["Report", "Section", "run_report", "render_html", "write_html", "default_flows", "default_hs", "default_T"]

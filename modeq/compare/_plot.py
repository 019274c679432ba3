"""PNG of a comparison study: errors vs h on log-log axes with fitted slopes, and trajectories."""

from __future__ import annotations

import numpy as np


def plot_study(results, path: str, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_err, ax_traj) = plt.subplots(1, 2, figsize=(12, 5))
    for res in results:
        hs = np.asarray(res.h)
        errs = np.array([np.nan if e is None else e for e in res.max_error], dtype=float)  # None: diverged
        (line,) = ax_err.loglog(hs, errs, "o", label=None)
        if res.fit is not None:
            grid = np.geomspace(hs.min(), hs.max(), 20)
            ax_err.loglog(
                grid, res.fit.constant * grid**res.fit.order, "-", color=line.get_color(),
                label=f"{res.flow}: slope {res.fit.order:.2f} (R = {res.order})",
            )
    ax_err.set_xlabel("step size h")
    ax_err.set_ylabel("max_n |theta_n - theta(nh)|")
    ax_err.legend(fontsize=8)
    ax_err.set_title("global error vs h")
    iterates, _ = results[0].trajectories[0]
    stride = max(1, len(iterates) // 60)
    if iterates.shape[1] >= 2:
        ax_traj.plot(iterates[::stride, 0], iterates[::stride, 1], "k.", label=f"iterates (h = {results[0].h[0]:g})")
        for res in results:
            _, values = res.trajectories[0]
            if values is not None:
                ax_traj.plot(values[:, 0], values[:, 1], "-", label=res.flow)
        ax_traj.set_xlabel("theta[0]")
        ax_traj.set_ylabel("theta[1]")
    else:
        t = np.arange(len(iterates)) * results[0].h[0]
        ax_traj.plot(t[::stride], iterates[::stride, 0], "k.", label="iterates")
        for res in results:
            if res.trajectories[0][1] is not None:
                ax_traj.plot(t, res.trajectories[0][1][:, 0], "-", label=res.flow)
        ax_traj.set_xlabel("t")
    ax_traj.legend(fontsize=8)
    ax_traj.set_title("trajectories (largest h)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""Paper-style figures with matplotlib: the trade-off (Pareto) figure, the training dynamics and an ablation.

The trade-off axes are the first pair the suites declare (benchmarks.metrics.trade_offs) that has data; their
labels and scales are the suites' too (Column.axis_label, Column.log_scale).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import pandas as pd  # noqa: E402

from benchmarks.metrics import Column, trade_offs  # noqa: E402
from pmc.reporting.jobs import DEFAULTS, read_train_log, setting_value  # noqa: E402

# train_log.jsonl: columns that are not loss terms; PMC's three panels and their titles
NOT_TERMS = {"step", "epoch", "lr"}
PMC_TERMS = ["selected_score", "collapse_loss", "retain_loss"]
TERM_LABELS = {
    "selected_score": "selected-answer ROUGE-L recall",
    "collapse_loss": "collapse loss (NLL)",
    "retain_loss": "retain loss (NLL)",
    "loss": "total loss",
}
MAX_TERMS = 4
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "h", "p", "*"]
REFERENCES = {"target": ("target model", "black", "*"), "retain": ("retain model", "dimgray", "X")}


def method_styles(methods: list[str]) -> dict[str, tuple[str, str]]:
    """A stable (colour, marker) per method, the same in every figure of one call (no grey: the references')."""
    colours = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 7] + list(plt.get_cmap("Dark2").colors)
    return {m: (colours[i % len(colours)], MARKERS[i % len(MARKERS)]) for i, m in enumerate(methods)}


def trade_off(per_job: pd.DataFrame) -> tuple[Column, Column]:
    """The first declared (x, y) pair with both values in some job."""
    pairs = trade_offs()
    for x, y in pairs:
        if x.title in per_job and y.title in per_job and per_job[[x.title, y.title]].notna().all(axis=1).any():
            return x, y
    names = [f"{x.title}/{y.title} ({x.suite})" for x, y in pairs]
    raise SystemExit("error: the results have " + (f"neither {' nor '.join(names)}" if len(names) > 1
                                                   else f"no {''.join(names)}") + " metrics")


def save(fig, out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight", metadata={"CreationDate": None})
    plt.close(fig)
    return paths


def pareto_front(points: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The points no other point beats on both x and y (both maximised), by increasing x."""
    best_y, front = -math.inf, []
    for _, row in points.sort_values([x, y], ascending=False).iterrows():
        if row[y] > best_y:
            front.append(row)
            best_y = row[y]
    return pd.DataFrame(front).sort_values(x)


def with_seeds(label: str, seeds: int) -> str:
    return f"{label} ({seeds} seeds)" if seeds > 1 else label


def error(points: pd.DataFrame, column: str):
    """The std column as error bars, None when no setting has more than one seed (no bar at all)."""
    std = points[f"{column} std"]
    return None if std.isna().all() else std.fillna(0)


def draw_trade_off(ax, summary: pd.DataFrame, styles: dict, x_column: Column, y_column: Column, box=None) -> None:
    """Every setting's mean ± std, each method's Pareto front, the reference models, and the method names of the
    points outside `box` (the zoomed-in region, drawn as a dashed rectangle; None: no zoom)."""
    x, y = x_column.title, y_column.title
    unlearned = summary[~summary["method"].isin(list(REFERENCES))]
    for method, points in unlearned.groupby("method", sort=False):
        points = points.dropna(subset=[x, y])
        if points.empty:
            continue
        colour, marker = styles[method]
        seeds = int(points["seeds"].max())
        ax.errorbar(points[x], points[y], xerr=error(points, x), yerr=error(points, y), fmt=marker, color=colour,
                    markersize=8, capsize=3, alpha=0.9, linestyle="none", zorder=3,
                    label=with_seeds(method, seeds) + (f", {len(points)} settings" if len(points) > 1 else ""))
        front = pareto_front(points, x, y)
        if len(points) > 1:
            ax.plot(front[x], front[y], color=colour, drawstyle="steps-pre", linewidth=1.5, alpha=0.7, zorder=2)
        name_x, name_y = front[x].iloc[-1], front[y].iloc[-1]  # the method's highest-quality front point
        if box is None or not (box[0][0] <= name_x <= box[0][1] and box[1][0] <= name_y <= box[1][1]):
            ax.annotate(method, (name_x, name_y), xytext=(5, 5), textcoords="offset points",
                        fontsize=8, color=colour, annotation_clip=True)
    for model, (label, colour, marker) in REFERENCES.items():
        ref = summary[summary["method"] == model].dropna(subset=[x, y])
        if not ref.empty:
            ax.errorbar(ref[x], ref[y], xerr=error(ref, x), yerr=error(ref, y), fmt=marker, color=colour,
                        markersize=13, capsize=3, linestyle="none", zorder=4,
                        label=with_seeds(label, int(ref["seeds"].max())))
    if x_column.log_scale:
        ax.set_xscale("symlog", linthresh=1e-4)
    if box is not None:
        (x0, x1), (y0, y1) = box
        ax.add_patch(matplotlib.patches.Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, linestyle="--",
                                                  edgecolor="gray", linewidth=1))
    ax.set_xlabel(x_column.axis_label)
    ax.set_ylabel(y_column.axis_label)
    ax.grid(alpha=0.3)


def zoom_box(summary: pd.DataFrame, x_column: Column, y_column: Column):
    """((x0, x1), (y0, y1)) around the unlearned settings crowded near the top utility, or None when not crowded:
    methods that destroy utility otherwise squeeze the interesting ones into a line."""
    x, y = x_column.title, y_column.title
    points = summary[~summary["method"].isin(list(REFERENCES))].dropna(subset=[x, y])
    span = summary[y].max() - summary[y].min()
    top = points[points[y] >= points[y].max() - 0.15 * span]
    if x_column.log_scale or span < 20 or len(top) < 3 or len(top) == len(points):
        return None
    references = summary[summary["method"].isin(list(REFERENCES))].dropna(subset=[x, y])
    top = pd.concat([top, references[references[x].between(top[x].min(), top[x].max())
                                     & (references[y] >= top[y].min())]])
    box = []
    for column in (x, y):
        low = (top[column] - top[f"{column} std"].fillna(0)).min()
        high = (top[column] + top[f"{column} std"].fillna(0)).max()
        pad = 0.08 * (high - low) + 0.5
        box.append((low - pad, high + pad))
    return tuple(box)


def pareto_figure(summary: pd.DataFrame, styles: dict, x: Column, y: Column, title: str):
    box = zoom_box(summary, x, y)
    fig, axes = plt.subplots(1, 2 if box else 1, figsize=(14, 5.8) if box else (8, 5.8), squeeze=False)
    axes = axes[0]
    draw_trade_off(axes[0], summary, styles, x, y, box)
    if box:
        axes[0].set_title("all settings")
        draw_trade_off(axes[1], summary, styles, x, y)
        axes[1].set_xlim(*box[0])
        axes[1].set_ylim(*box[1])
        axes[1].set_title("zoom: the high-utility settings (dashed box on the left)")
    fig.suptitle(f"{title}: {x.title} vs {y.title} of the unlearned models (up and right is better)\n"
                 f"mean ± std over seeds; lines: Pareto front over a method's settings", fontsize=11)
    handles, labels = axes[0].get_legend_handles_labels()
    axes[-1].legend(handles, labels, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    fig.tight_layout()
    return fig


def terms_of(method: str, logs: list[pd.DataFrame]) -> list[str]:
    """PMC's three panels; for other methods every numeric term in order of appearance (at most MAX_TERMS)."""
    seen = list(dict.fromkeys(c for log in logs for c in log.columns if c not in NOT_TERMS))
    if method == "pmc" and all(t in seen for t in PMC_TERMS):
        return PMC_TERMS
    return seen[:MAX_TERMS]


def term_label(term: str) -> str:
    """'forget_nll' -> 'forget NLL'."""
    if term in TERM_LABELS:
        return TERM_LABELS[term]
    return " ".join(w.upper() if w in {"nll", "kl", "lr"} else w for w in term.split("_"))


def setting_rest(setting: str, method: str, key: str | None = None) -> str:
    """The setting (the overrides that differ between jobs, jobs.Job.setting) without method=... and, if given,
    KEY=..."""
    if setting == DEFAULTS:
        return ""
    return " ".join(o for o in setting.split() if o != f"method={method}"
                    and not (key and o.lstrip("+~").startswith(f"{key}=")))


def distinguishing(settings: list[str]) -> dict[str, str]:
    """Each setting without the overrides every one of them shares: what tells one method's lines apart (a sweep's
    experiment=..., method=... and fixed options would fill the legend, wider than its panel)."""
    overrides = {setting: [] if setting == DEFAULTS else setting.split() for setting in settings}
    shared = set.intersection(*(set(o) for o in overrides.values())) if settings else set()
    return {setting: " ".join(o for o in overrides[setting] if o not in shared) for setting in settings}


def dynamics_figure(per_job: pd.DataFrame, styles: dict, title: str):
    """One row per method, one panel per loss term, one line (mean ± std band over seeds) per setting."""
    unlearned = per_job[per_job["model"] == "unlearned"]
    rows = []  # (method, terms, {setting: [train logs]})
    for method, jobs in unlearned.groupby("method", sort=False):
        runs = {}
        for setting, setting_jobs in jobs.groupby("setting", sort=False):
            logs = [log for log in (read_train_log(Path(j)) for j in setting_jobs["job"]) if not log.empty]
            if logs:
                runs[setting] = logs
        terms = terms_of(method, [log for logs in runs.values() for log in logs])
        if terms:
            rows.append((method, terms, runs))
    if not rows:
        return None
    columns = max(len(terms) for _, terms, _ in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(3.6 * columns, 2.6 * len(rows) + 0.6), squeeze=False,
                             layout="constrained")
    for r, (method, terms, runs) in enumerate(rows):
        several = len(runs) > 1
        seeds = max(len(logs) for logs in runs.values())
        labels = distinguishing(list(runs))
        palette = plt.get_cmap("viridis")
        for c in range(columns):
            ax = axes[r][c]
            if c >= len(terms):
                ax.set_axis_off()
                continue
            term = terms[c]
            for i, (setting, logs) in enumerate(runs.items()):
                colour = palette(i / max(len(runs) - 1, 1) * 0.9) if several else styles[method][0]
                with_term = [log[["step", term]] for log in logs if term in log]
                if not with_term:
                    continue
                steps = pd.concat(with_term).groupby("step")[term]
                label = with_seeds(setting_rest(labels[setting], method) or method, len(with_term))
                mean, std = steps.mean(), steps.std().fillna(0)
                ax.plot(mean.index, mean.values, color=colour, linewidth=1.5, label=label)
                ax.fill_between(mean.index, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
            ax.set_title(f"{method}: {term_label(term)}", fontsize=10)
            ax.set_xlabel("optimiser step", fontsize=9)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.tick_params(labelsize=8)
            ax.grid(alpha=0.3)
        if several or seeds > 1:
            axes[r][0].legend(fontsize=7, loc="best", frameon=False)
    fig.suptitle(f"{title}: training dynamics from train_log.jsonl (mean ± std over seeds)", fontsize=12)
    return fig


def ablation_figure(per_job: pd.DataFrame, styles: dict, key: str, metrics: tuple[Column, Column], title: str):
    """The metrics against the value of KEY, one line per method and the rest of its setting."""
    unlearned = per_job[per_job["model"] == "unlearned"].copy()
    unlearned["value"] = [setting_value(Path(job), key) for job in unlearned["job"]]
    unlearned = unlearned[unlearned["value"].notna()]
    if unlearned.empty:
        raise SystemExit(f"error: no job sets {key} (neither in its overrides nor in its .hydra/config.yaml)")
    # lines: one per method and the rest of its setting (everything but KEY)
    unlearned["line"] = [setting_rest(setting, method, key)
                         for setting, method in zip(unlearned["setting"], unlearned["method"])]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in unlearned["value"])
    # numbers in order; other values by their text, then type (a total order: a set's order changes per process)
    values = sorted(set(unlearned["value"]), key=lambda v: v if numeric else (str(v), type(v).__name__))
    position = {v: (v if numeric else i) for i, v in enumerate(values)}
    references = per_job[per_job["model"].isin(list(REFERENCES))]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for ax, column in zip(axes, metrics):
        metric = column.title
        for (method, line), jobs in unlearned.groupby(["method", "line"], sort=False):
            colour, marker = styles[method]
            stats = jobs.groupby("value")[metric].agg(["mean", "std", "size"]).reindex(
                [v for v in values if v in set(jobs["value"])])
            ax.errorbar([position[v] for v in stats.index], stats["mean"], yerr=stats["std"].fillna(0), color=colour,
                        marker=marker, capsize=3, linewidth=1.5,
                        label=with_seeds(f"{method} {line}".strip(), int(stats["size"].max())))
        for model, (label, colour, _) in REFERENCES.items():
            ref = references[references["model"] == model][metric].dropna()
            if not ref.empty:
                ax.axhline(ref.mean(), color=colour, linestyle="--", linewidth=1, label=label)
        if not numeric:
            ax.set_xticks(range(len(values)), [str(v) for v in values])
        elif len(values) <= 12:
            ax.set_xticks(values, [f"{v:g}" for v in values])
        ax.set_xlabel(key)
        ax.set_ylabel(column.axis_label)
        if column.log_scale:
            ax.set_yscale("symlog", linthresh=1e-4)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=9, frameon=False)
    fig.suptitle(f"{title}: ablation of {key} (mean ± std over seeds)", fontsize=12)
    return fig




def write_figures(per_job: pd.DataFrame, summary: pd.DataFrame, out: Path, name: str,
                  ablation: str | None = None) -> list[Path]:
    """<name>_pareto, <name>_dynamics (when some job has a train log with loss terms) and, with `ablation`,
    <name>_ablation_<KEY>, each as .png and .pdf under `out`; returns the written paths. Every figure is made before
    any is written: a bad ablation key leaves no half-done set."""
    methods = list(dict.fromkeys(per_job.loc[per_job["model"] == "unlearned", "method"]))
    styles = method_styles(methods)
    x, y = trade_off(per_job)
    figures = {}  # stem -> figure
    if ablation:
        stem = f"{name}_ablation_{re.sub(r'[^A-Za-z0-9._-]', '_', ablation)}"
        figures[stem] = ablation_figure(per_job, styles, ablation, (x, y), name)
    figures[f"{name}_pareto"] = pareto_figure(summary, styles, x, y, name)
    dynamics = dynamics_figure(per_job, styles, name)
    if dynamics is None:
        print("no train_log.jsonl with loss terms: no dynamics figure")
    else:
        figures[f"{name}_dynamics"] = dynamics
    return [path for stem, fig in figures.items() for path in save(fig, out, stem)]

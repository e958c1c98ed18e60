"""Figures: one seaborn style, PNG + PDF + caption for each, written atomically.

Plots distinguish numbers **measured here** from numbers **quoted from a paper** (with the
table or figure they come from) in their legends and captions.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker as mticker  # noqa: E402
import seaborn as sns  # noqa: E402

from bfpo import labels  # noqa: E402
from bfpo.io import atomic_path, project_path, write_text  # noqa: E402

# Fixed colours per quadrant, used in every figure.
QUADRANT_COLORS = {
    "helpful-safe": "#1b9e77",
    "unhelpful-safe": "#7570b3",
    "unhelpful-unsafe": "#e6ab02",
    "helpful-unsafe": "#d95f02",
}

# No dates or version strings in the files, so a re-run writes identical bytes.
_METADATA = {"png": {"Software": None}, "pdf": {"CreationDate": None, "Producer": None, "Creator": None}}


def set_style() -> None:
    """The project's one style."""
    sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight"})


def save_figure(fig, name: str, caption: str, figures_dir: str | Path = "figures") -> dict[str, Path]:
    """Write ``name``.png, ``name``.pdf and ``name``.md (the caption) into ``figures_dir``."""
    out = project_path(figures_dir)
    paths = {}
    for ext in ("png", "pdf"):
        paths[ext] = out / f"{name}.{ext}"
        with atomic_path(paths[ext]) as tmp:
            fig.savefig(tmp, format=ext, metadata=_METADATA[ext])
    paths["caption"] = write_text(out / f"{name}.md", f"**{name}**: {caption.strip()}\n")
    return paths


def plot_global_ranking(
    quadrant_rewards: dict[str, float],
    implicit_rewards: dict[str, dict[str, float]],
    alpha: float,
    c: float,
    tau: float,
):
    """The analogue of the BFPO paper's Figure 2, from the finite bandit of ``bfpo.theory``.

    Left: the bilinear reward (I_safe - alpha)(h + c) against helpfulness, for safe and unsafe
    responses, with the four quadrants marked. Right: the implicit reward
    tau * log(pi / pi_ref) (centred) that each trained policy assigns to the four responses.
    """
    set_style()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.2), width_ratios=[1, 1.4])
    hs = [0.0, 1.0]
    for safe, ls in ((1, "-"), (0, "--")):
        ax0.plot(
            hs,
            [(safe - alpha) * (h + c) for h in hs],
            ls,
            color="grey",
            label=f"{'safe' if safe else 'unsafe'}: ({safe} - {alpha})(h + {c})",
        )
    ranked = sorted(quadrant_rewards, key=quadrant_rewards.get, reverse=True)
    for name, r in quadrant_rewards.items():
        h = 1.0 if name.startswith("helpful") else 0.0
        ax0.scatter([h], [r], s=120, color=QUADRANT_COLORS[name], zorder=3)
        ax0.annotate(
            f"#{ranked.index(name) + 1} {name}",
            (h, r),
            textcoords="offset points",
            xytext=(8 if h == 0 else -8, 6),
            ha="left" if h == 0 else "right",
        )
    ax0.axhline(0, color="black", lw=0.6)
    ax0.margins(y=0.15)
    ax0.set(
        xlabel="helpfulness h(y)",
        ylabel="bilinear reward R(y)",
        xlim=(-0.25, 1.25),
        title="Bilinear reward: the global ranking",
    )
    ax0.legend(loc="upper left", fontsize=8)

    methods = list(implicit_rewards)
    names = list(quadrant_rewards)
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        xs = [m + (k - (len(names) - 1) / 2) * width for m in range(len(methods))]
        ax1.bar(xs, [implicit_rewards[m][name] for m in methods], width, color=QUADRANT_COLORS[name], label=name)
    ax1.axhline(0, color="black", lw=0.6)
    ax1.set_xticks(range(len(methods)), [m.replace(" (", "\n(") for m in methods], fontsize=9)
    ax1.set(
        ylabel=f"implicit reward  {tau:g}·log(π/π_ref), centred",
        title="What each objective teaches (finite bandit, measured here)",
    )
    ax1.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.16), frameon=False)
    fig.tight_layout()
    return fig


# Colours per label combination (chosen_safe, rejected_safe) of a pair; chosen is the more helpful.
COMBINATION_COLORS = {
    "safe > safe": "#1b9e77",
    "safe > unsafe": "#66a61e",
    "unsafe > safe": "#d95f02",
    "unsafe > unsafe": "#e6ab02",
}


def plot_label_combinations(counts: dict[str, dict[str, int]], targets: dict[str, float]):
    """Share of each safety-label combination per data source, as stacked horizontal bars.

    ``counts`` is :func:`bfpo.data.label_counts`; ``targets`` maps each combination to its BFPO
    target g, shown in the legend. Bars are annotated with counts.
    """
    set_style()
    sources = list(counts)
    fig, ax = plt.subplots(figsize=(9, 0.6 * len(sources) + 1.6))
    left = [0.0] * len(sources)
    for combo, color in COMBINATION_COLORS.items():
        totals = [sum(counts[s].values()) for s in sources]
        shares = [counts[s].get(combo, 0) / t for s, t in zip(sources, totals, strict=True)]
        bars = ax.barh(sources, shares, left=left, color=color, label=f"{combo}  (g = {targets[combo]:+g})")
        for bar, s, share in zip(bars, sources, shares, strict=True):
            if share > 0.06:
                ax.text(
                    bar.get_x() + bar.get_width() / 2,
                    bar.get_y() + bar.get_height() / 2,
                    str(counts[s][combo]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white",
                )
        left = [a + b for a, b in zip(left, shares, strict=True)]
    ax.invert_yaxis()
    ax.set(
        xlim=(0, 1),
        xlabel="share of pairs (chosen = the more helpful response)",
        title="Safety labels of the pairs, per source",
    )
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False, title="labels (BFPO target)")
    return fig


def _smooth(values, window: int):
    out, acc = [], []
    for v in values:
        acc.append(v)
        acc = acc[-window:]
        out.append(sum(acc) / len(acc))
    return out


def plot_training(
    sft_metrics: list[dict], pref_metrics: list[dict], targets: dict[str, float], label: str = "BFPO", window: int = 10
):
    """Training curves: SFT loss, preference loss, per-combination implicit-reward margins (with
    their BFPO targets g as dashed lines) and the log-prob change of chosen and rejected responses.

    ``targets`` maps a combination name of the metrics ("safe>unsafe", ...) to its target g.
    Curves are running means over ``window`` logged steps.
    """
    set_style()
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    steps = lambda ms: [m["step"] for m in ms]  # noqa: E731
    axes[0].plot(steps(sft_metrics), _smooth([m["loss"] for m in sft_metrics], window), color="grey")
    axes[0].set(title="SFT", xlabel="step", ylabel="NLL per response (nats)")
    axes[1].plot(steps(pref_metrics), _smooth([m["loss"] for m in pref_metrics], window), color="black")
    axes[1].set(title=f"{label} loss", xlabel="step", ylabel="loss", yscale="log")
    for key, name in labels.DISPLAY.items():
        ms = [m for m in pref_metrics if f"margin/{key}" in m]
        if not ms:
            continue
        color = COMBINATION_COLORS[name]
        axes[2].plot(steps(ms), _smooth([m[f"margin/{key}"] for m in ms], window), color=color, label=name)
        axes[2].axhline(targets[key], color=color, ls="--", lw=1)
    axes[2].axhline(0, color="black", lw=0.6)
    axes[2].set(title="implicit-reward margin beta*h (dashed: target g)", xlabel="step", ylabel="beta * h")
    axes[2].legend(fontsize=8)
    axes[3].plot(
        steps(pref_metrics),
        _smooth([m["chosen_logp_change"] for m in pref_metrics], window),
        label="chosen (more helpful)",
    )
    axes[3].plot(
        steps(pref_metrics), _smooth([m["rejected_logp_change"] for m in pref_metrics], window), label="rejected"
    )
    axes[3].axhline(0, color="black", lw=0.6)
    axes[3].set(title="log pi - log pi_ref", xlabel="step", ylabel="nats")
    axes[3].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_judged(summaries: dict[str, dict[str, float]], title: str):
    """Gold-judge numbers of several models side by side (grouped bars, one group per metric)."""
    set_style()
    metrics = ["helpfulness", "over_refusal", "harmlessness"]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    width = 0.8 / len(summaries)
    for k, (name, s) in enumerate(summaries.items()):
        xs = [i + (k - (len(summaries) - 1) / 2) * width for i in range(len(metrics))]
        bars = ax.bar(xs, [s[m] for m in metrics], width, label=name)
        for bar, m in zip(bars, metrics, strict=True):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, f"{s[m]:.2f}", ha="center", fontsize=8)
    ax.set_xticks(
        range(len(metrics)), ["helpfulness (benign + scary)", "over-refusal (scary)", "harmlessness (harmful)"]
    )
    ax.set(ylim=(0, 1.1), ylabel="gold judge", title=title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return fig


def plot_method_margins(margins: dict[str, dict[str, float]], targets: dict[str, float] | None = None):
    """Heatmap of beta*h per method (rows) and label combination (columns), on the same pairs."""
    import pandas as pd

    set_style()
    cols = list(labels.COMBINATIONS)
    table = pd.DataFrame(margins).T.reindex(columns=cols)
    if targets:
        table.loc["BFPO target g"] = [targets[c] for c in cols]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(table) + 1.4))
    lim = float(table.abs().max().max()) or 1.0
    sns.heatmap(
        table, annot=True, fmt=".2f", cmap="RdBu", center=0, vmin=-lim, vmax=lim, ax=ax, cbar_kws={"shrink": 0.7}
    )
    ax.set(
        xlabel="label combination of the pair (chosen = more helpful)", ylabel="", title="implicit-reward margin beta*h"
    )
    return fig


def plot_safe_rlhf(metrics_by_seed: dict[str, list[dict]], window: int = 5, starts: dict | None = None):
    """PPO-Lagrangian trajectories, one line per seed: lambda; the constrained quantity J_C (the mean
    episode cost over the window) with each seed's threshold d dashed and its start's J_C as a dot at
    iteration 0 (``starts``: seed name -> ``{"start_cost", "cost_threshold"}``, from ppo_summary.json),
    so that one sees whether the constraint binds; reward; the gold judge's unsafe rate of the rollouts
    (is the cost model's view right?) and KL."""
    set_style()
    panels = [
        ("lambda", "Lagrange multiplier lambda"),
        ("episode_cost_window", "J_C (window mean cost): start dot, d dashed"),
        ("reward", "reward model score R"),
        ("gold_unsafe_rate", "unsafe rollouts (gold judge)"),
        ("kl", "KL(pi || pi_ref) per response"),
    ]
    judged = all("gold_unsafe_rate" in m for ms in metrics_by_seed.values() for m in ms)
    panels = [p for p in panels if judged or p[0] != "gold_unsafe_rate"]  # a run without a judge has no gold panel
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    palette = sns.color_palette("colorblind", max(len(metrics_by_seed), 1))
    for color, (name, ms) in zip(palette, metrics_by_seed.items(), strict=False):
        xs = [m["iteration"] for m in ms]
        for ax, (key, _) in zip(axes, panels, strict=True):
            smooth = 1 if key in ("lambda", "episode_cost_window") else window
            ax.plot(xs, _smooth([m[key] for m in ms], smooth), label=name, color=color)
        if starts and name in starts:
            ax = axes[1]
            ax.axhline(starts[name]["cost_threshold"], color=color, lw=0.9, ls="--")
            ax.plot([0], [starts[name]["start_cost"]], marker="o", color=color, ms=6, clip_on=False)
    for ax, (_, title) in zip(axes, panels, strict=True):
        ax.set(title=title, xlabel="PPO iteration")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_tradeoff(
    df,
    x: str = "helpfulness",
    y: str = "harmlessness",
    quoted=None,
    title: str = "",
    intervals=None,
    front=None,
    curve=None,
):
    """Helpfulness against harmlessness per method: mean over seeds (measured here, filled markers)
    with error bars: the 95 % bootstrap interval over seeds and prompts when ``intervals`` is given
    (``{title: {metric: Interval}}``, see :mod:`bfpo.stats`), else the standard deviation over
    seeds. ``front``: method titles on the Pareto front of the means, joined by a dashed line.
    ``curve``: Safe RLHF's trade-off curve, rows (lambda, ``x``, ``y``) of means over seeds, drawn as
    a line of squares labelled by lambda. ``quoted`` rows (method, x, y, source) are drawn hollow and
    labelled as quoted."""
    set_style()
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    stats = df.groupby("title")[[x, y]].agg(["mean", "std", "count"])
    palette = sns.color_palette("colorblind", len(stats))

    def err(name, metric, row, n):
        if intervals is not None and name in intervals:
            iv = intervals[name][metric]
            return [[max(iv.mean - iv.low, 0.0)], [max(iv.high - iv.mean, 0.0)]]
        return row[(metric, "std")] if n > 1 else None

    for color, (name, row) in zip(palette, stats.iterrows(), strict=True):
        n = int(row[(x, "count")])
        ax.errorbar(
            row[(x, "mean")],
            row[(y, "mean")],
            xerr=err(name, x, row, n),
            yerr=err(name, y, row, n),
            fmt="o",
            ms=9,
            color=color,
            capsize=3,
            label=f"{name} (measured, n={n})",
        )
        ax.annotate(name, (row[(x, "mean")], row[(y, "mean")]), fontsize=7, xytext=(5, 5), textcoords="offset points")
    if front:
        xs = [stats.loc[name, (x, "mean")] for name in front]
        ys = [stats.loc[name, (y, "mean")] for name in front]
        ax.plot(xs, ys, ls="--", color="gray", lw=1, zorder=0, label="Pareto front of the means")
    if curve is not None and len(curve):
        curve = curve.sort_values("lambda")
        ax.plot(
            curve[x],
            curve[y],
            ls="-",
            marker="s",
            ms=5,
            color="dimgray",
            lw=1.2,
            label="Safe RLHF, fixed lambda (measured, mean over seeds)",
        )
        for _, r in curve.iterrows():
            ax.annotate(f"lambda={r['lambda']:g}", (r[x], r[y]), fontsize=6, xytext=(4, -9), textcoords="offset points")
    if quoted is not None:
        for _, q in quoted.iterrows():
            ax.scatter(q[x], q[y], s=80, facecolors="none", edgecolors="black")
            ax.annotate(
                f"{q['method']} (quoted: {q['source']})",
                (q[x], q[y]),
                fontsize=7,
                xytext=(4, 4),
                textcoords="offset points",
            )
    ax.set(xlabel=x.replace("_", " "), ylabel=y.replace("_", " "), title=title)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


def plot_per_seed(df, metrics=("helpfulness", "harmlessness", "over_refusal"), title: str = ""):
    """One dot per seed and method for each metric, so the spread between seeds is visible; a bar
    marks the mean (measured here). Seeds sit at fixed vertical offsets, so the figure is
    byte-stable (no random jitter)."""
    set_style()
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 4.8), sharey=True)
    order = sorted(dict.fromkeys(df["title"]))
    seeds = sorted(df["seed"].unique())
    colors = dict(zip(seeds, sns.color_palette("colorblind", len(seeds)), strict=True))
    offset = {s: (k - (len(seeds) - 1) / 2) * 0.12 for k, s in enumerate(seeds)}
    for ax, metric in zip(axes, metrics, strict=True):
        for seed in seeds:
            part = df[df["seed"] == seed].set_index("title")[metric].reindex(order)
            ys = [i + offset[seed] for i in range(len(order))]
            ax.scatter(part.values, ys, s=30, color=colors[seed], label=f"seed {seed}", zorder=2)
        means = df.groupby("title")[metric].mean().reindex(order)
        ax.scatter(means.values, range(len(order)), marker="|", s=300, color="black", zorder=3)
        ax.set(xlabel=metric.replace("_", " "), xlim=(-0.05, 1.05), yticks=range(len(order)))
        ax.set_yticklabels(order)
        ax.invert_yaxis()
    axes[-1].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.suptitle(title)
    return fig


def plot_compute(df, y: str = "harmlessness"):
    """Training compute (log FLOPs, beyond the shared SFT) against ``y``, one point per method
    (the mean over its seeds); every number is measured here."""
    set_style()
    stats = df.groupby("title").agg(flops=("flops", "mean"), value=(y, "mean"))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    palette = sns.color_palette("colorblind", len(stats))
    for color, (name, row) in zip(palette, stats.iterrows(), strict=True):
        ax.scatter(row["flops"], row["value"], s=70, color=color, label=name)
    ax.set(
        xscale="log",
        xlabel="training FLOPs beyond the shared SFT (log)",
        ylabel=y,
        title=f"compute and {y} (measured here, mean over seeds)",
    )
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


def plot_compute_curves(curves, level: float, titles: dict[str, str], y: str = "harmlessness"):
    """``y`` against cumulative training FLOPs along each run (``curves``: method, seed, step, flops,
    ``y``): a thin line per seed, a thick one for the mean over seeds, the target ``level`` dashed.
    The first point of each curve is the SFT start at 0 FLOPs, drawn at the smallest positive FLOPs
    of the figure so that the log axis can show it."""
    set_style()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    floor = curves.loc[curves["flops"] > 0, "flops"].min() / 3
    palette = dict(zip(sorted(curves["method"].unique()), sns.color_palette("colorblind"), strict=False))
    for method, part in curves.groupby("method"):
        part = part.assign(x=part["flops"].clip(lower=floor))
        for _, run in part.groupby("seed"):
            run = run.sort_values("step")
            ax.plot(run["x"], run[y], color=palette[method], lw=0.7, alpha=0.35)
        mean = part.groupby("step")[["x", y]].mean().sort_index()
        ax.plot(mean["x"], mean[y], color=palette[method], lw=2.4, marker="o", label=titles.get(method, method))
    ax.axhline(level, color="black", lw=0.9, ls="--", label=f"level {level:.2f} (SFT + 0.2)")
    ax.set(
        xscale="log",
        xlabel="cumulative training FLOPs beyond SFT (log; the SFT start at the left edge)",
        ylabel=f"{y} (test wordings)",
        title=f"compute to reach a {y} level (measured here)",
    )
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())  # decade labels only (after the log scale is set)
    ax.legend(fontsize=8, frameon=False)
    return fig


def plot_benchmark_table(wide, title: str = ""):
    """Heatmap of a model x (task metric) table of scores in [0, 1] (likelihood differences, which
    are unbounded, are left out)."""
    set_style()
    table = wide[[c for c in wide.columns if "likelihood_diff" not in c]]
    fig, ax = plt.subplots(figsize=(0.55 * len(table.columns) + 3, 0.45 * len(table) + 2.5))
    sns.heatmap(
        table,
        annot=True,
        fmt=".2f",
        cmap="viridis",
        vmin=0,
        vmax=1,
        ax=ax,
        cbar_kws={"shrink": 0.6},
        annot_kws={"fontsize": 7},
    )
    ax.set(xlabel="", ylabel="", title=title)
    ax.tick_params(axis="x", labelsize=8)
    return fig


def plot_quoted_bubbles(points, source: str):
    """The paper's 7B comparison (helpfulness vs harmlessness, bubble size as in the source figure),
    every point QUOTED, with the arrow from Zephyr-7b-beta to BFPO."""
    set_style()
    fig, ax = plt.subplots(figsize=(7, 5))
    palette = sns.color_palette("colorblind", len(points))
    for color, (_, p) in zip(palette, points.iterrows(), strict=True):
        ax.scatter(
            p["helpfulness"],
            p["harmlessness"],
            s=(p["radius_px"] * 2.2) ** 2,
            color=color,
            alpha=0.55,
            edgecolors="black",
            linewidths=0.6,
        )
        ax.annotate(p["method"], (p["helpfulness"], p["harmlessness"]), ha="center", va="center", fontsize=8)
    by = points.set_index("method")
    if {"Zephyr-7b-beta", "BFPO"} <= set(by.index):
        ax.annotate(
            "",
            xy=(by.loc["BFPO", "helpfulness"], by.loc["BFPO", "harmlessness"] - 0.006),
            xytext=(by.loc["Zephyr-7b-beta", "helpfulness"], by.loc["Zephyr-7b-beta", "harmlessness"] + 0.006),
            arrowprops={"arrowstyle": "->", "color": "black", "lw": 1.5},
        )
    ax.set(
        xlabel="helpfulness (quoted; metric not named by the source)",
        ylabel="harmlessness (quoted; metric not named by the source)",
        title="7B models, QUOTED from the BFPO paper's repository figure",
        xlim=(-0.02, 0.18),
        ylim=(0.56, 0.77),
    )
    ax.text(0.01, 0.01, f"quoted, not measured here: {source}", transform=ax.transAxes, fontsize=7, color="dimgray")
    return fig

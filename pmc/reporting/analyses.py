"""The robustness analyses report (`eval=analyses`): one Markdown table per analysis with the target, the retain
and every job's unlearned model, example answers, and PNG figures (collateral damage histograms, least-likely attack
rate vs chance, leakage under sampling and prefilling, response quality). Reads each job's eval/<model>/*.json
through pmc.reporting.jobs. Stage 0 is shared by the jobs of a sweep, so the target and retain rows come from the
first job that has them; jobs whose stage-0 models scored differently (built again on another machine: a mini paper
spread over sessions) add their own rows, labelled with that job's name, as the tables add a reference row; scores
that agree to a relative 1e-6 are the same build scored again (`same_scores`), unless the two jobs name other
checkpoints or recorded other weights' digests (`one_build`).
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pmc.reporting.figures import distinguishing  # noqa: E402
from pmc.reporting.jobs import REFERENCES, load_jobs, one_build, same_scores, stage0_build, suite_file  # noqa: E402
from pmc.reporting.tables import markdown_table  # noqa: E402

COLOURS = {"target": "#4d4d4d", "retain": "#8c8c8c"}
METHOD_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#bcbd22"]
SETTINGS_KEYS = (("sampling", "k"), ("sampling", "temperature"), ("sampling", "top_p"), ("prefill", "fixed_prefix"),
                 ("prefill", "answer_fraction"), ("collateral", "source"), ("quality", "empty_nll"))


def load(roots: list[Path]) -> tuple[dict[str, dict], dict, list[str]]:
    """model label -> {"analyses": suite file, "paper": suite file or None, "job": dir}; the first job's
    results.json; jobs without analyses results. A method run in several settings is labelled in each by what sets
    it apart from the method's other settings (`npo [method.handler.retain_weight=0]`); a setting's later seeds by
    their seed (`npo [seed 1]`), jobs that share a seed too by their name (archived units' jobs by unit and name).
    The target and retain get a row per build, as in the tables: another checkpoint name, other weights (where both
    jobs recorded them) or other scores make another build, labelled by its first job."""
    models: dict[str, dict] = {}
    first, skipped, jobs = None, [], []
    for job in load_jobs(roots)[0]:
        if suite_file(job.path, "unlearned", "analyses") is None:
            skipped.append(str(job.path))
        else:
            jobs.append((job, job.results.get("method", "unlearned")))
    settings: dict[str, list[str]] = {}
    for job, method in jobs:
        settings.setdefault(method, []).append(job.setting)
    apart = {method: distinguishing(s) for method, s in settings.items() if len(s) > 1}
    names = Counter(job.path.name for job, _ in jobs)  # archived units all name their one job "0"

    def job_name(job) -> str:
        return job.path.name if names[job.path.name] == 1 else "/".join(job.path.parts[-2:])

    def unique(label: str, *tags) -> str:
        """`label`, else the first of "label [tag]" no other row has; the job's whole path at last."""
        return next((candidate for candidate in (label, *(f"{label} [{tag}]" for tag in tags))
                     if candidate not in models), f"{label} [{tags[-1]}]")

    builds: list[tuple[tuple, dict]] = []  # per build: ((stage-0 model, checkpoint name, weights digests), summary)
    for job, method in jobs:
        first = first or job.results
        own = apart.get(method, {}).get(job.setting, "")
        labels = []
        for model in REFERENCES:
            summary = (suite_file(job.path, model, "analyses") or {}).get("summary")
            build = (model, *stage0_build(job.results, model))
            if not any(one_build(build, built) and same_scores(summary, scores) for built, scores in builds):
                builds.append((build, summary))
                labels.append((model, unique(model, job_name(job), job.path)))
        base = f"{method} [{own}]" if own else method
        labels.append(("unlearned", unique(base, f"seed {job.results.get('seed')}", job_name(job), job.path)))
        for model, label in labels:
            models[label] = {"analyses": suite_file(job.path, model, "analyses"),
                             "paper": suite_file(job.path, model, "paper"), "job": str(job.path)}
    return models, first, skipped


def reference_of(label: str) -> str | None:
    """"target" or "retain" for a stage-0 model's row (another build's is "target [<job>]"), None for a method's."""
    base = label.split(" [")[0]
    return base if base in REFERENCES else None


def colour(label: str, methods: list[str]) -> str:
    return COLOURS.get(reference_of(label) or "") or METHOD_COLOURS[methods.index(label) % len(METHOD_COLOURS)]


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def cell(text: str | None, limit: int = 160) -> str:
    if text is None:
        return "–"
    text = " ".join(text.split()).replace("|", "\\|")
    return (text[:limit] + "…") if len(text) > limit else (text or "*(empty)*")


def distribution(entry: dict, subset: str) -> dict:
    return next(d for d in entry["analyses"]["examples"]["collateral_distribution"] if d["subset"] == subset)


def greedy_forget_rouge(entry: dict) -> float | None:
    paper = entry.get("paper")
    return paper["summary"].get("rouge_forget") if paper else None


# --- markdown -------------------------------------------------------------------------------------------------------


def run_settings(config: dict) -> tuple[dict, list[str]]:
    """A run's analyses settings and those it changed from the suite's defaults, as "section.key=value".

    A run records every setting under eval.analyses (conf/eval/); runs made before the suites became a config group
    recorded only the user's overrides, under eval_settings.analyses."""
    if isinstance(config.get("eval"), dict):
        # here, not at the top: the suite's module brings torch, which the rest of reporting does without
        from benchmarks.metrics.analyses import AnalysesSuite

        settings = config["eval"].get("analyses") or {}
        defaults = AnalysesSuite().settings()
    else:
        settings, defaults = (config.get("eval_settings") or {}).get("analyses") or {}, {}
    changed = [f"{a}.{b}={settings[a][b]!r}" for a, b in SETTINGS_KEYS
               if b in (settings.get(a) or {}) and settings[a][b] != (defaults.get(a) or {}).get(b)]
    return settings, changed


def report(models: dict[str, dict], first: dict, name: str, figures: dict[str, str], n_examples: int) -> str:
    s = {label: e["analyses"]["summary"] for label, e in models.items()}
    config = first.get("config") or {}
    settings, given = run_settings(config)
    any_entry = next(iter(models.values()))
    questions = len(any_entry["analyses"]["examples"]["least_likely"])
    all_dist = distribution(any_entry, "all")
    samples_per_question = len(any_entry["analyses"]["examples"]["sampling"][0]["samples"])
    out = [f"# Robustness analyses: {name}\n",
           f"Benchmark `{first.get('benchmark')}`, model `{config.get('model', {}).get('name')}`,"
           f" seed {first.get('seed')}; {questions} forget questions; target and retain models from stage 0, one "
           f"unlearned model per job ({', '.join(l for l in models if not reference_of(l))}). Settings: "
           + (", ".join(given) if given else "the suite's defaults (conf/eval/analyses.yaml)")
           + f"; {samples_per_question} samples per question.\n",
           "Generated by `python scripts/analyses_report.py <sweep dir> --name " + name + "` from the runs' "
           "`eval/<model>/analyses.json` (and `paper.json` for the greedy reference).\n"]

    out.append("## Collateral damage\n")
    out.append("Per-token log-probability shift (model − target, nats) on "
               f"{all_dist['texts']} texts unrelated to the forget set (source `{all_dist['source']}`, "
               f"{all_dist['texts_dropped_for_overlap']} dropped for overlapping the forget answers), over all "
               "tokens and over the tokens that occur in the forget answers. 0 everywhere for the target by "
               "construction.\n")
    rows = []
    for label, entry in models.items():
        a, f = distribution(entry, "all"), distribution(entry, "forget_tokens")
        rows.append([label, fmt(a["mean_logprob"]), fmt(a["mean"]), fmt(a["mean_abs"]), fmt(a["q05"]),
                     fmt(a["q50"]), fmt(a["q95"]), fmt(f["mean"]), fmt(f["mean_abs"]), fmt(f["q05"]),
                     f"{f['tokens']}/{a['tokens']}"])
    out.append(markdown_table(["model", "mean log p", "mean shift", "mean \\|shift\\|", "q05", "median", "q95",
                               "mean shift (forget tok.)", "mean \\|shift\\| (forget tok.)", "q05 (forget tok.)",
                               "forget tok. / all"], rows, numeric=True))
    out.append(f"\n![collateral damage]({figures['collateral']})\n")

    out.append("## Least-likely multiple-choice attack\n")
    true_option = (settings.get("attack") or {}).get("true_option", "paraphrased")
    out.append("Options: the true answer (" + ("its paraphrase, worded like the wrong options, where the benchmark "
               "has one" if true_option == "paraphrased" else "as fine-tuned") + ") and its perturbed answers; the "
               "attacker picks the option the model finds least likely (length-normalised log-probability). Rate at "
               "which the pick is the true answer; above chance means unlearning made the true answer "
               "conspicuously unlikely, which gives it away.\n")
    out.append(markdown_table(["model", "attack rate", "chance", "rate / chance"],
                              [[label, fmt(v["least_likely_attack_rate"]), fmt(v["least_likely_chance"]),
                                fmt(v["least_likely_attack_rate"] / v["least_likely_chance"], 2)]
                               for label, v in s.items()], numeric=True))
    out.append(f"\n![attack]({figures['attack']})\n")

    out.append("## Leakage under sampling\n")
    out.append(f"{samples_per_question} sampled answers per forget question; ROUGE-L recall against the true answer, "
               "mean and worst case (max) over the samples, averaged over questions. Greedy: the paper suite's "
               "forget ROUGE. The retain model, which never saw the forget set, is the no-knowledge baseline: "
               "recall also counts the words of the question and the answer's phrasing.\n")
    out.append(markdown_table(["model", "greedy", "sampling mean", "sampling worst case"],
                              [[label, fmt(greedy_forget_rouge(models[label])), fmt(v["sampling_rouge_mean"]),
                                fmt(v["sampling_rouge_max"])] for label, v in s.items()], numeric=True))
    out.append(f"\n![sampling]({figures['sampling']})\n")

    out.append("## Leakage under prefilling\n")
    fixed = any_entry["analyses"]["examples"]["prefill_fixed"][0]["prefix"]
    out.append(f"Greedy continuation of a prefilled answer: the fixed prefix \"{fixed}\" (ROUGE-L recall against the "
               "full answer) and the first words of the true answer (recall against the rest; "
               f"answer_fraction={(settings.get('prefill') or {}).get('answer_fraction', 0.25)}). The retain model "
               "is the no-knowledge baseline.\n")
    out.append(markdown_table(["model", "no prefill (greedy)", "fixed prefix", "answer prefix"],
                              [[label, fmt(greedy_forget_rouge(models[label])), fmt(v["prefill_fixed_rouge"]),
                                fmt(v["prefill_answer_rouge"])] for label, v in s.items()], numeric=True))
    out.append(f"\n![prefill]({figures['prefill']})\n")

    out.append("## Response quality on the forget questions\n")
    out.append("Greedy answers: empty-answer rate, length (words), distinct-word ratio, and fluency = mean per-token "
               "NLL of the answer under the retain model (lower = more fluent to a model that never saw the forget "
               "set; it also rises for answers that state the forgotten facts, which the retain model does not "
               "know, and is trivially low for the retain model's own answers).\n")
    out.append(markdown_table(["model", "empty rate", "answer length", "distinct ratio", "fluency NLL"],
                              [[label, fmt(v["empty_rate"]), fmt(v["answer_length"], 1), fmt(v["distinct_ratio"]),
                                fmt(v["fluency_nll"])] for label, v in s.items()], numeric=True))
    out.append(f"\n![quality]({figures['quality']})\n")

    out.append("## Example answers\n")
    per_model = {label: e["analyses"]["examples"]["example_answers"] for label, e in models.items()}
    count = min([n_examples] + [len(rows) for rows in per_model.values()])
    for i in range(count):
        ref = next(iter(per_model.values()))[i]
        out.append(f"**Q{i + 1}. {cell(ref['question'])}** True answer: {cell(ref['answer'])}\n")
        out.append(markdown_table(["model", "greedy", "one sample", "fixed prefix + continuation",
                                   "answer prefix + continuation"],
                                  [[label, cell(rows[i]["greedy"]), cell(rows[i]["sample"]),
                                    cell(rows[i]["prefill_fixed"]), cell(rows[i]["prefill_answer"])]
                                   for label, rows in per_model.items()]))
    return "\n".join(out)


# --- figures --------------------------------------------------------------------------------------------------------


def collateral_figure(models: dict[str, dict], methods: list[str], path: Path) -> None:
    labels = [label for label in models if reference_of(label) != "target"]  # a target's shift is 0
    fig, axes = plt.subplots(1, len(labels), figsize=(4.2 * len(labels), 3.6), sharey=True, squeeze=False)
    for ax, label in zip(axes[0], labels):
        for subset, style in (("all", dict(alpha=0.45, label="all tokens")),
                              ("forget_tokens", dict(histtype="step", linewidth=1.8, label="forget-answer tokens"))):
            d = distribution(models[label], subset)
            edges, counts = np.asarray(d["bin_edges"]), np.asarray(d["counts"], dtype=float)
            total = max(d["tokens"], 1)
            ax.hist(edges[:-1], bins=edges, weights=counts / total, color=colour(label, methods), **style)
            if subset == "all":
                ax.axvline(d["mean"], color="black", linestyle="--", linewidth=1, label="mean, all tokens")
        a, f = distribution(models[label], "all"), distribution(models[label], "forget_tokens")
        name = f"{label} (reference)" if reference_of(label) else label
        title = f"{name}\nmean shift: all {a['mean']:+.2f}, forget-answer tokens {f['mean']:+.2f}"
        if a["underflow"] or a["overflow"]:
            title += f"\n({a['underflow']} tokens below, {a['overflow']} above the range)"
        ax.set_title(title, fontsize=9)
        ax.axvline(0, color="grey", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("log p(model) − log p(target), nats/token")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("fraction of tokens (log scale)")
    axes[0][-1].legend(fontsize=8, loc="upper right")
    fig.suptitle("Collateral damage on unrelated text (shift against the target model)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def grouped_bars(ax, labels: list[str], groups: dict[str, list[float]], methods: list[str]) -> None:
    """One cluster per model, one bar per group (hatched differently), model colours."""
    width = 0.8 / len(groups)
    hatches = ["", "//", "..", "xx"]
    x = np.arange(len(labels))
    for j, (group, values) in enumerate(groups.items()):
        offsets = x - 0.4 + width * (j + 0.5)
        values = [np.nan if v is None else v for v in values]
        bars = ax.bar(offsets, values, width, color=[colour(l, methods) for l in labels], hatch=hatches[j],
                      edgecolor="black", linewidth=0.6, alpha=0.55 + 0.45 * (j == len(groups) - 1), label=group)
        for bar, v in zip(bars, values):
            if not np.isnan(v):
                ax.annotate(f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom",
                            fontsize=7, xytext=(0, 1), textcoords="offset points")
    ax.set_xticks(x, labels)
    ax.grid(axis="y", alpha=0.3)
    legend = ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for handle in legend.legend_handles:
        handle.set_facecolor("white")


def attack_figure(models, methods, path: Path) -> None:
    labels = list(models)
    s = [models[l]["analyses"]["summary"] for l in labels]
    fig, ax = plt.subplots(figsize=(1.3 * len(labels) + 2, 3.6))
    rates = [v["least_likely_attack_rate"] for v in s]
    bars = ax.bar(labels, rates, color=[colour(l, methods) for l in labels], edgecolor="black", linewidth=0.6)
    for bar, v in zip(bars, rates):
        ax.annotate(f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=8,
                    xytext=(0, 1), textcoords="offset points")
    for i, v in enumerate(s):
        ax.hlines(v["least_likely_chance"], i - 0.45, i + 0.45, colors="black", linestyles="--", linewidth=1.2,
                  label="chance (1 / #options)" if i == 0 else None)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("least-likely pick is the true answer")
    ax.set_title("Least-likely multiple-choice attack", fontsize=11)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def bars_figure(models, methods, path: Path, groups: dict[str, list], title: str, ylabel: str) -> None:
    labels = list(models)
    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 3.2, 3.6))
    grouped_bars(ax, labels, groups, methods)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def quality_figure(models, methods, path: Path) -> None:
    labels = list(models)
    s = [models[l]["analyses"]["summary"] for l in labels]
    panels = (("empty_rate", "empty-answer rate", (0, 1.05)), ("answer_length", "answer length (words)", None),
              ("distinct_ratio", "distinct-word ratio", (0, 1.05)),
              ("fluency_nll", "fluency: NLL under retain (lower = more fluent)", None))
    fig, axes = plt.subplots(1, 4, figsize=(3.3 * 4, 3.6))
    for ax, (key, title, ylim) in zip(axes, panels):
        values = [np.nan if v[key] is None else v[key] for v in s]
        bars = ax.bar(labels, values, color=[colour(l, methods) for l in labels], edgecolor="black", linewidth=0.6)
        for bar, v in zip(bars, values):
            if not np.isnan(v):
                ax.annotate(f"{v:.2f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom",
                            fontsize=7, xytext=(0, 1), textcoords="offset points")
        if ylim:
            ax.set_ylim(*ylim)
        else:
            ax.set_ylim(0, np.nanmax(values) * 1.15 if np.isfinite(np.nanmax(values)) else 1)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Response quality on the forget questions (greedy answers)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)




FIGURES = ("collateral", "attack", "sampling", "prefill", "quality")


def write_report(models: dict[str, dict], first: dict, out: Path, name: str, n_examples: int) -> list[str]:
    """Write out/<name>.md and the figures out/<name>_<kind>.png beside it; returns the figure file names."""
    methods = [label for label in models if not reference_of(label)]
    out.mkdir(parents=True, exist_ok=True)
    figures = {kind: f"{name}_{kind}.png" for kind in FIGURES}
    s = {label: e["analyses"]["summary"] for label, e in models.items()}
    greedy = [greedy_forget_rouge(models[label]) for label in models]
    collateral_figure(models, methods, out / figures["collateral"])
    attack_figure(models, methods, out / figures["attack"])
    bars_figure(models, methods, out / figures["sampling"],
                {"greedy": greedy, "sampling: mean": [v["sampling_rouge_mean"] for v in s.values()],
                 "sampling: worst case": [v["sampling_rouge_max"] for v in s.values()]},
                "Leakage under sampling", "ROUGE-L recall vs true answer")
    bars_figure(models, methods, out / figures["prefill"],
                {"no prefill (greedy)": greedy, "fixed prefix": [v["prefill_fixed_rouge"] for v in s.values()],
                 "answer prefix": [v["prefill_answer_rouge"] for v in s.values()]},
                "Leakage under prefilling", "ROUGE-L recall of the continuation")
    quality_figure(models, methods, out / figures["quality"])
    (out / f"{name}.md").write_text(report(models, first, name, figures, n_examples), encoding="utf-8")
    return list(figures.values())

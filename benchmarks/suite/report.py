"""The suite's reports: the schema check, the Markdown summary, the headline table and the plots."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from benchmarks.lab.engines import latency_at as point
from benchmarks.lab.plots import save_figure

# the goal for a base-size teacher (TinyBERT-4's kept)
BASE_TARGET = {"faster": 40, "smaller": 30, "accuracy_kept": 0.968}
VOCABULARY_TARGET = {"smaller": 1.5, "accuracy_loss": 0.005}


def validate(report: dict, schema_file: Path) -> None:
    """Raise if the report does not follow its schema (the one the committed results are checked against)."""
    import jsonschema

    jsonschema.validate(report, json.loads(schema_file.read_text(encoding="utf-8")))


def _setting(report: dict) -> str:
    at = report["settings"]["headline_at"]
    return f"batch {at['batch_size']}, {at['tokens']} tokens, {at['threads']} thread{'s' if at['threads'] > 1 else ''}"


def _ratio(value: float | None, fmt: str = ".1f") -> str:
    return "n/a" if value is None else f"{value:{fmt}}x"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def headline_markdown(report: dict, details: str) -> str:
    """The table the README quotes: tinyship's measured ratios beside the papers' published ones; details: the
    results directory, for the link."""
    m = report["machine"]
    lines = ["| | smaller | faster | accuracy kept |", "|---|---:|---:|---:|"]
    for h in report["headline"]:
        lines.append(f"| **{h['method']}**, measured here | {_ratio(h['smaller'])} | {_ratio(h['faster'])} | "
                     f"{_percent(h['accuracy_kept'])} |")
    for p in report["papers"]:
        lines.append(f"| {p['method']}, published | {_ratio(p['smaller'])} | {_ratio(p['faster'])} | "
                     f"{_percent(p['accuracy_kept'])} |")
    lines += ["", f"Measured by `make bench{'-quick' if report['mode'] == 'quick' else ''}` on {report['date']} "
              f"on {m['cpu']}, {m['cores']} cores: each shipped model against its teacher in PyTorch fp32, size of "
              f"the model file, latency at {_setting(report)} (median), accuracy on "
              f"{report['settings']['test_set']} ({report['settings']['test_examples']} test examples). The papers' "
              "ratios are against BERT-base on their own tasks and hardware: context, not a like-for-like "
              f"comparison. Details: [{details}]({details}/results.md)."]
    if report["mode"] == "quick":
        lines += ["", "Quick mode: one grid point and 64 test examples, a check that the suite runs. Its accuracies "
                  "move by whole examples (1/64 each): not results."]
    for h in report["headline"]:
        if h.get("pair") == "base":
            met = [f"{k.replace('_', ' ')} {'met' if (h[k] or 0) >= v else 'NOT met'}" for k, v in BASE_TARGET.items()]
            goal = ", ".join(f"{v:.1%} of the teacher's accuracy" if k == "accuracy_kept" else f"{v}x {k}"
                             for k, v in BASE_TARGET.items())
            lines += ["", f"The goal for a base-size teacher is at least {goal}: {', '.join(met)}. Its bundle "
                      f"({report['models']['base bundle']['dir']}) comes from benchmarks/distill/base.py, which "
                      "compares every student it tried (benchmarks/results/distill-base)."]
    v = report.get("vocabulary")
    if v:
        met = (v["smaller"] >= VOCABULARY_TARGET["smaller"]
               and v["accuracy_change"] >= -VOCABULARY_TARGET["accuracy_loss"])
        lines += ["", f"Vocabulary pruning (the student's INT8 ONNX with its vocabulary cut to the pieces its training "
                  f"texts use, every special token and single character kept): {v['size_bytes'][0] / 1e6:.1f} MB -> "
                  f"{v['size_bytes'][1] / 1e6:.1f} MB ({v['smaller']:.2f}x smaller), test accuracy "
                  f"{v['accuracy'][0]:.4f} "
                  f"-> {v['accuracy'][1]:.4f}; the goal, at least {VOCABULARY_TARGET['smaller']}x smaller within "
                  f"{100 * VOCABULARY_TARGET['accuracy_loss']:g} points, {'met' if met else 'NOT met'}."]
    return "\n".join(lines) + "\n"


def _cell(p: dict | None) -> str:
    return "" if p is None else f"{p['median_ms']:.2f} / {p['p99_ms']:.2f}"


def markdown(report: dict, details: str) -> str:
    m, s = report["machine"], report["settings"]
    at = s["headline_at"]
    v = report["versions"]
    lines = [
        f"# Benchmark suite, {report['date']} ({report['mode']} mode)", "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['flags']) or 'no AVX2/VNNI'}), {m['system']}, "
        f"Python {m['python']}; onnxruntime {v.get('onnxruntime')}, torch {v.get('torch')}, transformers "
        f"{v.get('transformers')}, optimum {v.get('optimum')}.",
        f"Each system runs in a fresh process, its threads as the grid says (torch.set_num_threads, onnxruntime's "
        "intra-op threads; OMP_NUM_THREADS unset, since onnxruntime's threads follow it). Latency: median "
        f"and p99 of {s['repeat']} runs after {s['warmup']} warm-up runs. Scope *forward*: the model on token ids of "
        "exactly the given length; *end-to-end*: texts in, labels out, tokenization included. Cold start: from the "
        "process's launch to its first prediction; RSS: the process's high-water mark after that first prediction, and "
        "after the whole run (peak). "
        "Ratios (smaller, faster, kept) against the teacher: in PyTorch fp32 for forward systems, in transformers' "
        "pipeline for end-to-end ones. "
        f"Test: {s['test_set']}, {s['test_examples']} examples. Pruned student: {s['prune_flops_removed']:.0%} of the "
        "student's encoder FLOPs pruned away, recovered by distillation ("
        + ", then ".join(f"{', '.join(r['losses'])} for {r['epochs']} epoch(s)" for r in s["recovery"]) + ").",
        "", "## Headline", "", headline_markdown(report, details),
        f"## Systems, at {_setting(report)}", "",
        "| system | scope | precision | accuracy | kept | size MB | smaller | params M | cold start s | "
        "RSS MB, first / peak | median ms | p99 ms | faster | best inputs/s |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in report["systems"]:
        p = point(x, **at)
        ratio = x["vs_teacher"]
        lines.append(
            f"| {x['id']} | {x['scope']} | {x['precision']} | {x['accuracy']:.4f} | "
            f"{_percent(ratio['accuracy_kept'])} | "
            f"{x['size_bytes'] / 1e6:.1f} | {_ratio(ratio['smaller'])} | "
            f"{'' if x['parameters'] is None else format(x['parameters'] / 1e6, '.1f')} | {x['cold_start_s']:.2f} | "
            f"{x['rss_after_first_prediction_mb']:.0f} / {x['peak_rss_mb']:.0f} | "
            f"{'' if p is None else format(p['median_ms'], '.2f')} | "
            f"{'' if p is None else format(p['p99_ms'], '.2f')} | {_ratio(ratio['faster'])} | "
            f"{max(q['per_second'] for q in x['latency']):.0f} |")
    grid = s["grid"]
    keys = [(b, t, n) for b in grid["batch_sizes"] for t in grid["lengths"] for n in grid["threads"]]
    lines += ["", "## Latency grid", "", "Cells: median / p99 ms; b batch size, s tokens, t threads.", "",
              "| system | " + " | ".join(f"b{b} s{t} t{n}" for b, t, n in keys) + " |", "|---|" + "---:|" * len(keys)]
    for x in report["systems"]:
        lines.append(f"| {x['id']} | " + " | ".join(_cell(point(x, b, t, n)) for b, t, n in keys) + " |")
    c = report["ceilings"]
    lines += ["", "## Machine ceilings and achieved rates", "",
              "onnxruntime GEMM, 1024^3, measured with the systems (and kept with them when a run resumes): "
              + ", ".join(f"{k.replace('_', ' ')} {val:,.0f}" for k, val in c.items())
              + f". Achieved: the encoder's matrix-product GOP at {_setting(report)} over the median time, against the "
              "ceiling of its precision and thread count. INT8 graphs keep the attention products (and everything "
              "but the projections and the FFN) in fp32, so their rate is a blend set against the int8 ceiling.", "",
              "| system | GOP/s | of the ceiling |", "|---|---:|---:|"]
    for x in report["systems"]:
        if "achieved" in x:
            lines.append(f"| {x['id']} | {x['achieved']['gops']:.0f} | {x['achieved']['of_ceiling']:.1%} |")
    lines += ["", "## Plots", "", "![accuracy against latency](accuracy_latency.png)", "",
              "![size on disk](size.png)", "", "![latency against input length](latency_length.png)"]
    return "\n".join(lines) + "\n"


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other point beats on both latency (lower) and accuracy (higher), by latency."""
    front, best = [], float("-inf")
    for latency, accuracy in sorted(points, key=lambda p: (p[0], -p[1])):
        if accuracy > best:
            front.append((latency, accuracy))
            best = accuracy
    return front


MARKERS = {"forward": "o", "end-to-end": "s"}  # by scope


def plot_all(report: dict, out: Path) -> None:
    """accuracy_latency.png, size.png and latency_length.png; systems coloured by model, marked by scope."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    roles = list(dict.fromkeys(x["role"] for x in report["systems"]))
    colors = {role: plt.get_cmap("tab10")(i) for i, role in enumerate(roles)}
    builtin = [x for x in report["systems"] if not x["role"].startswith("base")]  # a base-size pair is another scale
    _accuracy_latency(plt, report, builtin, colors, out / "accuracy_latency.png")
    _sizes(plt, report["systems"], colors, out / "size.png")
    _latency_length(plt, report, builtin, out / "latency_length.png")


def _accuracy_latency(plt, report: dict, systems: list[dict], colors: dict, path: Path) -> None:
    at = report["settings"]["headline_at"]
    systems = [x for x in systems if point(x, **at)]
    fig, (ax, key) = plt.subplots(1, 2, figsize=(14, 6.5), gridspec_kw={"width_ratios": [2.2, 1]})
    for number, x in enumerate(systems, 1):
        ms = point(x, **at)["median_ms"]
        ax.scatter(ms, x["accuracy"], color=colors[x["role"]], marker=MARKERS[x["scope"]], s=60, zorder=3)
        ax.annotate(str(number), (ms, x["accuracy"]), fontsize=7.5, xytext=(4, 4), textcoords="offset points")
    front = pareto([(point(x, **at)["median_ms"], x["accuracy"]) for x in systems])
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="black", linestyle="--", linewidth=1,
            zorder=2)
    ax.scatter([p[0] for p in front], [p[1] for p in front], s=220, facecolors="none", edgecolors="black", zorder=2,
               label="Pareto front (no system both faster and more accurate)")
    for role in dict.fromkeys(x["role"] for x in systems):
        ax.scatter([], [], color=colors[role], label=role)
    for scope, marker in MARKERS.items():
        ax.scatter([], [], color="gray", marker=marker, label=f"scope: {scope}")
    ax.set_xscale("log")
    _plain_ticks(ax.xaxis)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel(f"median latency (ms, log scale), {_setting(report)}")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Accuracy against latency, built-in task ({report['settings']['test_set']}, "
                 f"{report['machine']['cpu']})", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    key.axis("off")
    key.text(0, 1, "\n".join(f"{n:>2}  {x['id']}" for n, x in enumerate(systems, 1)), va="top", fontsize=8,
             family="monospace", transform=key.transAxes)
    save_figure(fig, path)


def _sizes(plt, systems: list[dict], colors: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 0.32 * len(systems) + 1.5))
    ax.barh([x["id"] for x in systems], [x["size_bytes"] / 1e6 for x in systems],
            color=[colors[x["role"]] for x in systems])
    for i, x in enumerate(systems):
        ax.annotate(f"{x['size_bytes'] / 1e6:.1f}", (x["size_bytes"] / 1e6, i), fontsize=7, xytext=(3, -3),
                    textcoords="offset points")
    ax.invert_yaxis()
    ax.set_xlabel("size on disk (MB)")
    ax.tick_params(axis="y", labelsize=7)
    ax.set_title("Size on disk of each system's model")
    save_figure(fig, path)


def _latency_length(plt, report: dict, systems: list[dict], path: Path) -> None:
    """Colour by how a model is served, line style by which model, one panel per scope."""
    kinds = list(dict.fromkeys(x["id"].split(" · ", 1)[1] for x in systems))
    kind_colors = {kind: plt.get_cmap("tab10")(i % 10) for i, kind in enumerate(kinds)}
    styles = dict(zip(dict.fromkeys(x["role"] for x in systems),
                      itertools.cycle(["-", "--", ":", "-.", (0, (5, 1, 1, 1))])))
    fig, axes = plt.subplots(1, 2, figsize=(14, 7.5), sharey=True)
    for ax, scope in zip(axes, MARKERS):
        for x in systems:
            if x["scope"] != scope:
                continue
            found = sorted((p["tokens"], p["median_ms"]) for p in x["latency"]
                           if p["batch_size"] == 1 and p["threads"] == 1)
            ax.plot([f[0] for f in found], [f[1] for f in found], marker=MARKERS[scope], linestyle=styles[x["role"]],
                    color=kind_colors[x["id"].split(" · ", 1)[1]], label=x["id"])
        ax.set_yscale("log")
        _plain_ticks(ax.yaxis, minor=False)
        ax.set_xticks(report["settings"]["grid"]["lengths"])
        ax.set_xlabel("input length (tokens)")
        ax.set_title(f"{scope}, built-in task: batch 1, 1 thread\n(colour: how it is served; line style: which model)",
                     fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("median latency (ms, log scale)")
    save_figure(fig, path)


def _plain_ticks(axis, minor: bool = True) -> None:
    """Log-scale tick labels as plain numbers (0.5, 2, 10), not powers of ten; minor ones too, or none."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    if not minor:
        axis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    axis.set_major_formatter(plain)
    axis.set_minor_formatter(plain if minor else NullFormatter())

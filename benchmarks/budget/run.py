"""The latency budget's front on the built-in task (issue 17), beside what users would pick instead.

For each budget (1, 2 and 4 ms at batch 1, 128 tokens, 1 thread, this machine), `tinyship compress --latency-budget`
on the demo's teacher ships a bundle. Beside it, every configuration a user reaches by hand from today's flags within
the budget: at each depth (--student-layers K), the least --prune-flops of 0.25, 0.5 and 0.75 the device profile puts
within the budget, pruned further where the measurement misses, each trained and measured. The alternatives: static
embeddings distilled by model2vec from the teacher and from the pre-trained MiniLM it was fine-tuned from, each with
model2vec's classifier trained on the task; and the teacher as INT8 ONNX with no distillation. Every system is
measured in a fresh process (benchmarks.lab.engines): test accuracy, size, latency from token ids (the ONNX models:
what the budget bounds) and end to end, text in and label out (all of them). Writes results.json, results.md and
front.png. Models and measurements are kept in --work (the students shared by the budgets), so a rerun resumes.

    python -m benchmarks.budget.run           # after `make demo`: about 1.5 hours on 2 cores
    python -m benchmarks.budget.run --quick   # one budget, 64 examples, one trial, static embeddings from the
                                              # teacher only: checks that it runs
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
from dataclasses import asdict, replace
from pathlib import Path

from benchmarks.lab.paths import add_run_arguments, run_paths
from benchmarks.lab.plots import save_figure
from benchmarks.suite.run import bundle_systems, data_fields, measured
from tinyship.compress import DistillConfig, Phase
from tinyship.compress.training import default_base_model
from tinyship.export import CompressConfig, ExportConfig, compress, export
from tinyship.export.budget import (
    BudgetConfig,
    Candidate,
    more_pruned,
    predictors_for,
    task_name,
    train_candidate,
    training_order,
)
from tinyship.export.bundling import versions
from tinyship.export.exporting import model_labels
from tinyship.export.probes import ProbeConfig, probe_pack
from tinyship.runtime.bench import machine
from tinyship.runtime.bundle import read_manifest
from tinyship.runtime.cli import configure_logging
from tinyship.runtime.data import DataConfig, load_examples
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import write_text_atomic, writing_directory
from tinyship.runtime.profile import Shape, profile

BUDGETS = (1.0, 2.0, 4.0)
AT = {"batch_size": 1, "tokens": 128, "threads": 1}
MARKERS = {"shipped by the search": ("*", "tab:red"), "trained (by hand)": ("o", "tab:blue"),
           "static embeddings (model2vec)": ("^", "tab:green"), "teacher, INT8": ("s", "black")}
NOISE_Z = 1.96  # accuracies differ beyond the test set's noise when apart by more than this many standard errors


def main() -> None:
    configure_logging()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="runs/demo/teacher", help="default: %(default)s")
    parser.add_argument("--budgets", type=float, nargs="+", default=list(BUDGETS), metavar="MS",
                        help="latency budgets in ms (default: %(default)s)")
    add_run_arguments(parser, "budget", "the largest budget only, 64 examples, one trial, short training, static "
                                        "embeddings from the teacher only")
    args = parser.parse_args()
    args.work, args.results = run_paths(args, "budget")
    try:
        report = front(args)
    except TinyshipError as e:
        raise SystemExit(f"error: {e}") from None
    print(markdown(report))


def front(args) -> dict:
    teacher, work, quick = Path(args.teacher), Path(args.work), args.quick
    if not (teacher / "config.json").is_file():
        raise TinyshipError(f"no model at {teacher}: run `make demo` first, or pass --teacher DIR")
    data = DataConfig(limit=64) if quick else DataConfig()
    budgets = [max(args.budgets)] if quick else sorted(args.budgets)
    repeat = 5 if quick else 100
    measuring = {"repeat": repeat, "warmup": max(2, repeat // 10), "data": data_fields(data), "versions": versions(),
                 "grid": {"batch_sizes": [AT["batch_size"]], "lengths": [AT["tokens"]], "threads": [AT["threads"]]},
                 "method": 1}
    device_profile(work / "device", quick)
    base = CompressConfig(teacher=str(teacher), data=data)
    if quick:  # a short distillation, whatever the data's size and the teacher
        base = replace(base, allow_weak_teacher=True,
                       distill=DistillConfig(min_steps=0, phases=[Phase({"prediction": 1.0}, 1)]))
    trained: dict[str, dict] = {}
    runs = [budget_run(base, budget, work, quick, trained) for budget in budgets]
    labels = model_labels(teacher)
    report = {"date": datetime.date.today().isoformat(), "machine": machine(), "versions": measuring["versions"],
              "at": AT, "test_set": load_examples(data, "test", labels).source,
              "budgets": runs, "trained": trained, "models": {}, "systems": []}
    specs = []
    for name, trial in trained.items():
        specs += bundle_systems(Path(trial["bundle"]), name, report, measuring)
    specs += bundle_systems(teacher_int8(teacher, work, data), "teacher INT8", report, measuring)
    sources = {"teacher": teacher} if quick else {"teacher": teacher, "MiniLM-L6": Path(default_base_model())}
    for source, model_dir in sources.items():
        role = f"static embeddings from {source}"
        specs.append({**measuring, "id": f"{role} · model2vec", "role": role, "engine": "model2vec",
                      "precision": "fp16", "labels": labels,
                      "model": str(static_embeddings(model_dir, work / f"model2vec-{source.lower()}", data, labels))})
    for spec in specs:
        report["systems"].append(measured(spec, work / "systems"))
    judge(report)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    write_text_atomic(results / "results.json", json.dumps(report, indent=1) + "\n")
    write_text_atomic(results / "results.md", markdown(report))
    plot(report, results / "front.png")
    return report


def device_profile(directory: Path, quick: bool) -> Path:
    """This machine's profile at the budgets' length and threads, made once and shared by the budgets' searches."""
    path = directory / "profile.json"
    if not path.is_file():
        counts = {"fitting": 8, "held_out": 3} if quick else {}
        pack = probe_pack(ProbeConfig(output=str(directory / "probes"), **counts))
        made = profile(pack, lengths=(AT["tokens"],), threads=(AT["threads"],), repeat=5 if quick else 30)
        write_text_atomic(path, json.dumps(made, indent=1) + "\n")
    return path


def budget_run(base: CompressConfig, budget_ms: float, work: Path, quick: bool, trained: dict) -> dict:
    """One budget's search (its shipped bundle, or why none) and the configurations reached by hand within it; every
    trained student's measurement goes into `trained`, by name."""
    out = work / f"budget-{budget_ms:g}ms"
    out.mkdir(parents=True, exist_ok=True)
    for shared in ("device", "students"):  # one profile, and each student trained once for every budget
        (work / shared).mkdir(exist_ok=True)
        if not (out / shared).exists():
            (out / shared).symlink_to(Path("..") / shared)
    config = replace(base, output_dir=str(out), budget=BudgetConfig(latency_ms=budget_ms, trials=1 if quick else 4,
                                                                     tokens=AT["tokens"], threads=AT["threads"]))
    try:
        compress(config)
        error = None
    except TinyshipError as e:
        error = str(e)
    search = json.loads((out / "budget.json").read_text(encoding="utf-8"))
    found = [Candidate(c["source"], c["layers"], c["prune_flops"], c["precision"], Shape.from_dict(c["shape"]),
                       c["predicted_ms"]) for c in search["candidates"]]
    for trial in search["trials"]:
        trained.setdefault(trial["candidate"], trial)
    predictors, device = predictors_for(config.budget, out, task_name(Path(base.teacher)))
    by_hand = []
    for candidate in training_order(found, budget_ms)[: 1 if quick else None]:
        while candidate:  # as a user would: that depth pruned further while it measures over the budget
            if candidate.name not in trained:
                trial = train_candidate(config, Path(base.teacher), candidate, predictors, device)
                trained[candidate.name] = {**asdict(trial), "candidate": candidate.name}
            by_hand.append(candidate.name)
            within = trained[candidate.name]["measured_ms"] <= budget_ms
            candidate = None if within or quick else more_pruned(found, candidate)
    shipped = read_manifest(out / "bundle")["budget"]["candidate"] if not error else None
    return {"budget_ms": budget_ms, "shipped": shipped, "error": error,
            "searched": [t["candidate"] for t in search["trials"]], "by_hand": by_hand}


def teacher_int8(teacher: Path, work: Path, data: DataConfig) -> Path:
    """The teacher exported to ONNX and quantized to INT8 (dynamic), no distillation: the smallest INT8 variant."""
    out = work / "teacher-int8"
    if not (out / "tinyship.json").is_file():
        export(ExportConfig(model=str(teacher), output=str(out), data=data, quantize="dynamic", objective="size",
                            accuracy_budget=1.0, force=True))
    return out


def static_embeddings(model_dir: Path, out: Path, data: DataConfig, labels: list[str]) -> Path:
    """model2vec's static embeddings distilled from model_dir (its defaults: every vocabulary token through the
    encoder, mean pooled, PCA to 256 dimensions), with its classifier trained on the task's train split and
    validated on its validation split: what a user picks for the fastest CPU text classifier."""
    if (out / "head.safetensors").is_file():
        return out
    from model2vec.distill import distill_from_model
    from model2vec.train import StaticModelForClassification
    from transformers import AutoModel, AutoTokenizer

    static = distill_from_model(AutoModel.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir),
                                device="cpu")
    train, validation = (load_examples(data, split, labels) for split in ("train", "validation"))
    classifier = StaticModelForClassification.from_static_model(model=static).fit(
        train.texts, [labels[i] for i in train.labels], X_val=validation.texts,
        y_val=[labels[i] for i in validation.labels], device="cpu")
    with writing_directory(out) as tmp:
        classifier.to_pipeline().save_pretrained(str(tmp))
    return out


def judge(report: dict) -> None:
    """Each budget against its targets (the shipped bundle within it as measured here, and at least as accurate as
    the best configuration by hand within it) and the front against each static-embeddings system."""
    forward = {s["role"]: median_ms(s) for s in report["systems"] if s["scope"] == "forward"}
    by_role = {s["role"]: s for s in report["systems"] if s["scope"] == "end-to-end"}
    n = report["systems"][0]["test_examples"]
    for run in report["budgets"]:
        within = [name for name in run["by_hand"] if forward[name] <= run["budget_ms"]]
        best = max(within, key=lambda name: by_role[name]["accuracy"], default=None)
        shipped = run["shipped"]
        run["verdict"] = {
            "shipped_ms": forward.get(shipped), "within": shipped is not None and forward[shipped] <= run["budget_ms"],
            "accuracy": by_role[shipped]["accuracy"] if shipped else None,
            "best_by_hand": best, "best_by_hand_accuracy": by_role[best]["accuracy"] if best else None}
        run["verdict"]["at_least_by_hand"] = shipped is not None and (
            best is None or by_role[shipped]["accuracy"] >= by_role[best]["accuracy"])
    points = [by_role[name] for name in report["trained"]]
    report["static_embeddings"] = []
    for role, system in by_role.items():
        if system["engine"] != "model2vec":
            continue
        ms, accuracy = median_ms(system), system["accuracy"]
        faster = [p for p in points if median_ms(p) <= ms]
        better = [p for p in faster if p["accuracy"] - accuracy > noise(p["accuracy"], accuracy, n)]
        fastest = min(points, key=median_ms)
        report["static_embeddings"].append({
            "role": role, "accuracy": accuracy, "end_to_end_ms": ms, "front_as_fast": [p["role"] for p in faster],
            "front_better_as_fast": [p["role"] for p in better], "front_fastest": fastest["role"],
            "front_fastest_ms": median_ms(fastest), "front_fastest_gain": fastest["accuracy"] - accuracy,
            "noise": noise(fastest["accuracy"], accuracy, n)})


def noise(a: float, b: float, n: int) -> float:
    """The accuracy difference that exceeds the test set's noise: NOISE_Z standard errors of a difference."""
    return NOISE_Z * math.sqrt((a * (1 - a) + b * (1 - b)) / n)


def median_ms(system: dict) -> float:
    """A system's median latency at the one grid point measured (AT)."""
    return system["latency"][0]["median_ms"]


def markdown(report: dict) -> str:
    at = report["at"]
    systems = {s["id"]: s for s in report["systems"]}
    lines = [f"# Latency budgets on the built-in task ({report['date']})", "",
             f"Batch {at['batch_size']}, {at['tokens']} tokens, {at['threads']} thread; {report['machine']['cpu']}; "
             f"test set: {report['test_set']}. Forward: the ONNX model on token ids (what a budget bounds); end to "
             "end: text in, label out (tinyship's runtime; model2vec's pipeline).", "",
             "| budget | shipped | forward ms | within | test accuracy | best by hand | its accuracy | at least |",
             "|---:|---|---:|---|---:|---|---:|---|"]
    for run in report["budgets"]:
        v = run["verdict"]
        if run["shipped"] is None:
            lines.append(f"| {run['budget_ms']:g} ms | none (budget.md says why) | | no | | "
                         f"{v['best_by_hand'] or ''} | {fmt(v['best_by_hand_accuracy'])} | no |")
            continue
        lines.append(f"| {run['budget_ms']:g} ms | {run['shipped']} | {v['shipped_ms']:.2f} | "
                     f"{'yes' if v['within'] else 'no'} | {v['accuracy']:.4f} | {v['best_by_hand'] or 'none'} | "
                     f"{fmt(v['best_by_hand_accuracy'])} | {'yes' if v['at_least_by_hand'] else 'no'} |")
    lines += ["", "Trained by the search, in order: "
              + "; ".join(f"{r['budget_ms']:g} ms: {', '.join(r['searched'])}" for r in report["budgets"])
              + ". By hand: " + "; ".join(f"{r['budget_ms']:g} ms: {', '.join(r['by_hand'])}"
                                          for r in report["budgets"]) + ".", "",
              "| system | forward ms (p99) | end to end ms (p99) | test accuracy | size MB |",
              "|---|---:|---:|---:|---:|"]
    roles = [*report["trained"], "teacher INT8", *(s["role"] for s in report["static_embeddings"])]
    for role in roles:
        forward = systems.get(f"{role} · ONNX")
        end = systems.get(f"{role} · tinyship runtime") or systems[f"{role} · model2vec"]
        lines.append(f"| {role} | {timing(forward)} | {timing(end)} | {end['accuracy']:.4f} | "
                     f"{end['size_bytes'] / 1e6:.1f} |")
    lines += ["", "Against static embeddings (end to end; a difference counts beyond the test set's noise, "
              f"{NOISE_Z} standard errors):", ""]
    for s in report["static_embeddings"]:
        if s["front_better_as_fast"]:
            lines.append(f"- {s['role']} ({s['accuracy']:.4f}, {s['end_to_end_ms']:.2f} ms): the front is more "
                         f"accurate at its speed or faster ({', '.join(s['front_better_as_fast'])}).")
        else:
            clearly = " and clearly more accurate" if s["front_as_fast"] else ""
            lines.append(f"- {s['role']} ({s['accuracy']:.4f}, {s['end_to_end_ms']:.2f} ms): NOT beaten at its "
                         f"speed: no trained student is as fast{clearly}. The front's fastest, "
                         f"{s['front_fastest']}, takes {s['front_fastest_ms']:.2f} ms and is "
                         f"{100 * s['front_fastest_gain']:+.1f} points (noise {100 * s['noise']:.1f}).")
    return "\n".join(lines) + "\n"


def fmt(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else ""


def timing(system: dict | None) -> str:
    if system is None:
        return ""
    point = system["latency"][0]
    return f"{point['median_ms']:.2f} ({point['p99_ms']:.2f})"


def plot(report: dict, path: Path) -> None:
    """Test accuracy against forward latency (the budgets drawn) and against end-to-end latency (with static
    embeddings), the trained students' front marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = report["systems"]
    shipped = {run["shipped"] for run in report["budgets"]}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, scope in zip(axes, ("forward", "end-to-end")):
        shown = [s for s in systems if s["scope"] == scope]
        students = sorted((s for s in shown if s["role"] in report["trained"]), key=median_ms)
        frontier, best = [], -1.0
        for s in students:
            if s["accuracy"] > best:
                frontier.append(s)
                best = s["accuracy"]
        ax.plot([median_ms(s) for s in frontier], [s["accuracy"] for s in frontier], color="tab:blue", lw=1,
                label="students' front")
        labelled = set()
        for s in shown:
            kind = ("shipped by the search" if s["role"] in shipped else "trained (by hand)"
                    if s["role"] in report["trained"] else "static embeddings (model2vec)"
                    if s["engine"] == "model2vec" else "teacher, INT8")
            marker, color = MARKERS[kind]
            ax.scatter(median_ms(s), s["accuracy"], marker=marker, color=color, s=80 if marker == "*" else 30,
                       label=None if kind in labelled else kind)
            labelled.add(kind)
            ax.annotate(s["role"], (median_ms(s), s["accuracy"]), textcoords="offset points", xytext=(4, 3),
                        fontsize=7)
        if scope == "forward":
            for number, run in enumerate(report["budgets"]):
                ax.axvline(run["budget_ms"], color="tab:red", ls="--", lw=0.8, label="budgets" if number == 0 else None)
        ax.set_xscale("log")
        ax.set_title("the ONNX model from token ids: what a budget bounds" if scope == "forward"
                     else "text in, label out", fontsize=9)
        ax.legend(loc="lower right", fontsize=7)
        ax.set_xlabel(f"{scope} latency, ms (batch 1, {report['at']['tokens']} tokens, 1 thread)")
    axes[0].set_ylabel("test accuracy")
    save_figure(fig, path)


if __name__ == "__main__":
    main()

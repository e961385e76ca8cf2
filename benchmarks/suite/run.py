"""The benchmark suite (`make bench`): every stage side by side with the teacher and with what users would pick instead.

On the built-in task (the MiniLM-L6 teacher fine-tuned on Rotten Tomatoes and the distilled student that `make demo`
leaves in runs/demo), the suite prunes the student and recovers it by distillation, exports each model to ONNX (fp32
and INT8), and measures every system, each in a fresh process (benchmarks.lab.engines):

  teacher, student, pruned student  x  PyTorch fp32, PyTorch dynamic INT8 (torch.ao), ONNX fp32, ONNX INT8,
                                       transformers pipeline, optimum pipeline (ORTModel on the INT8 file)
  the chosen bundle (runs/demo/bundle)  as its ONNX model and through tinyship's runtime

For each: test accuracy, size on disk, parameters, cold start, peak RSS, and latency median / p99 with throughput at
batch 1 and 8, 16 / 64 / 128 tokens, 1 and 2 threads. In the same run, this CPU's GEMM ceilings and each ONNX model's
achieved rate against them. Writes results.json (checked against schema.json), results.md and three plots; with
--readme, the headline table in README.md between its markers. Models made and systems measured are kept in --work
under their inputs' fingerprints (model files, settings, package versions), so a rerun resumes where it stopped and
anything that changed is made or measured again.

    python -m benchmarks.suite.run --readme README.md  # `make bench`: after `make demo`, about 11 minutes on 2 cores
    python -m benchmarks.suite.run --quick             # `make bench-quick`: minutes, one grid point, 64 examples
    python -m benchmarks.suite.run --base-teacher runs/bench-distill-base/teacher \\
        --base-bundle runs/bench-distill-base/minilm-l4/bundle   # add the base-size pair of benchmarks/distill/base.py
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import re
from pathlib import Path

from benchmarks.lab.ceilings import ceilings_in_fresh_process
from benchmarks.lab.engines import ENGINES, run
from benchmarks.lab.paths import add_run_arguments, run_paths
from benchmarks.suite.report import headline_markdown, markdown, plot_all, point, validate
from tinyship.compress import (
    DistillConfig,
    Phase,
    PruneConfig,
    VocabularyConfig,
    distill,
    load_model,
    prune,
    prune_vocabulary,
)
from tinyship.compress.flops import config_flops
from tinyship.compress.tinyship_pruned import plain_config
from tinyship.export import ExportConfig, export
from tinyship.export.bundling import versions
from tinyship.export.exporting import model_labels
from tinyship.export.quantization import batch_invariant_of
from tinyship.export.report import save_results
from tinyship.runtime.bench import machine
from tinyship.runtime.bundle import batch_invariant, read_manifest
from tinyship.runtime.cli import configure_logging
from tinyship.runtime.data import DataConfig, load_examples
from tinyship.runtime.errors import TinyshipError
from tinyship.runtime.files import write_text_atomic

SCHEMA_VERSION = 1
FULL = {"batch_sizes": [1, 8], "lengths": [16, 64, 128], "threads": [1, 2]}
QUICK = {"batch_sizes": [1], "lengths": [16], "threads": [1]}
BASE = {"batch_sizes": [1], "lengths": [16, 64, 128], "threads": [1, 2]}  # a base-size teacher at batch 8 takes seconds
HEADLINE_AT = {"batch_size": 1, "tokens": 128, "threads": 1}
MEASURING_METHOD = 2  # bump when how systems are measured changes: stored measurements are then redone
RECOVERY = [Phase({"hidden": 1.0}, 1), Phase({"prediction": 1.0}, 2)]
PAPERS = [  # published ratios against BERT-base, for context: other models, tasks and hardware than ours
    {"method": "TinyBERT-4 (Jiao et al. 2020)", "smaller": 7.5, "faster": 9.4, "accuracy_kept": 0.968},
    {"method": "DistilBERT (Sanh et al. 2019)", "smaller": 1 / 0.6, "faster": 1.6, "accuracy_kept": 0.97},
    {"method": "MobileBERT (Sun et al. 2020)", "smaller": 4.3, "faster": 5.5, "accuracy_kept": 77.7 / 78.3},
]
MARKERS = ("<!-- bench:headline:start -->", "<!-- bench:headline:end -->")


def main() -> None:
    configure_logging()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="runs/demo/teacher", help="default: %(default)s")
    parser.add_argument("--student", default="runs/demo/student", help="default: %(default)s")
    parser.add_argument("--bundle", default="runs/demo/bundle", help="the chosen bundle (default: %(default)s)")
    parser.add_argument("--prune-flops", type=float, default=0.6,
                        help="share of the student's encoder FLOPs to prune away (default: %(default)s)")
    parser.add_argument("--base-teacher", help="a base-size teacher (e.g. runs/bench-distill-base/teacher)")
    parser.add_argument("--base-bundle",
                        help="the bundle shipped from it (e.g. runs/bench-distill-base/minilm-l4/bundle)")
    parser.add_argument("--readme", help="a README whose headline block to rewrite from the results (full mode only)")
    add_run_arguments(parser, "suite", "one grid point, 64 examples, few repeats, short recovery", work="runs/bench")
    args = parser.parse_args()
    args.work, args.results = map(str, run_paths(args, "suite", work="runs/bench"))
    if args.quick and args.readme:
        parser.error("the README quotes full results only: drop --readme, or drop --quick")
    try:
        suite(args)
    except TinyshipError as e:
        raise SystemExit(f"error: {e}") from None
    print((Path(args.results) / "results.md").read_text())


def check_inputs(args) -> None:
    """Every input checked before the long work starts."""
    for role in ("teacher", "student", "base_teacher"):
        path = getattr(args, role)
        if path and not (Path(path) / "config.json").is_file():
            flag = "--" + role.replace("_", "-")
            raise TinyshipError(f"no model at {path}: run `make demo` first, or pass {flag} DIR")
    if bool(args.base_teacher) != bool(args.base_bundle):
        raise TinyshipError("--base-teacher and --base-bundle go together")
    for bundle in (args.bundle, args.base_bundle):
        if bundle:
            read_manifest(bundle)  # a clear error when it is not a bundle
    if not 0 < args.prune_flops < 1:
        raise TinyshipError(f"--prune-flops {args.prune_flops}: give the share to prune away, between 0 and 1")
    if args.readme:
        text = Path(args.readme).read_text(encoding="utf-8") if Path(args.readme).is_file() else ""
        if MARKERS[0] not in text or MARKERS[1] not in text:
            raise TinyshipError(f"{args.readme} has no headline block: add the lines {MARKERS[0]} and {MARKERS[1]}")


def suite(args) -> dict:
    check_inputs(args)
    work, quick = Path(args.work), args.quick
    data = DataConfig(limit=64) if quick else DataConfig()
    grid, repeat = (QUICK, 3) if quick else (FULL, 30)
    measuring = {"repeat": repeat, "warmup": max(2, repeat // 10), "data": data_fields(data), "versions": versions(),
                 "method": MEASURING_METHOD}
    models = {"teacher": Path(args.teacher), "student": Path(args.student),
              "pruned student": pruned_student(Path(args.teacher), Path(args.student), work, args.prune_flops, data,
                                               quick),
              "student, vocabulary pruned": vocabulary_pruned(Path(args.student), work, data)}
    if args.base_teacher:
        models["base teacher"] = Path(args.base_teacher)
    ceilings_repeat = 5 if quick else 20
    report = {"schema_version": SCHEMA_VERSION, "date": datetime.date.today().isoformat(),
              "mode": "quick" if quick else "full", "machine": machine(), "versions": measuring["versions"],
              "settings": {"grid": grid, "repeat": repeat, "warmup": measuring["warmup"],
                           "headline_at": HEADLINE_AT, "prune_flops_removed": args.prune_flops,
                           "recovery": [{"losses": p.losses, "epochs": recovery_epochs(p, quick)} for p in RECOVERY]},
              "ceilings": stored(work / "ceilings.json", {"repeat": ceilings_repeat, "versions": measuring["versions"],
                                                          "method": MEASURING_METHOD},
                                 lambda: ceilings_in_fresh_process(ceilings_repeat), "this CPU's GEMM ceilings"),
              "models": {}, "systems": []}
    test = load_examples(data, "test", model_labels(models["teacher"]))
    report["settings"] |= {"test_set": test.source, "test_examples": len(test)}
    specs = []
    for role, model_dir in models.items():
        config = plain_config(model_dir)
        report["models"][role] = {"dir": str(model_dir),
                                  "parameters": sum(p.numel() for p in load_model(model_dir).parameters()),
                                  "gop_per_sequence": {str(t): config_flops(config, t) / 1e9 for t in FULL["lengths"]}}
        common = {**measuring, "role": role, "model": str(model_dir), "fingerprint": fingerprint(model_dir),
                  "labels": model_labels(model_dir), "max_length": data.max_length,
                  "vocab_size": config["vocab_size"], "parameters": report["models"][role]["parameters"],
                  "grid": BASE if role.startswith("base") and not quick else grid}
        specs += systems_of(common, work / "exports", data)
    specs += bundle_systems(Path(args.bundle), "bundle", report, {**measuring, "grid": grid})
    if args.base_bundle:
        specs += bundle_systems(Path(args.base_bundle), "base bundle", report,
                                {**measuring, "grid": BASE if not quick else grid}, runtime=False)
    for spec in specs:
        report["systems"].append(measured(spec, work / "systems"))
    add_ratios(report)
    validate(report, Path(__file__).with_name("schema.json"))
    results = save_results(args.results, report, markdown(report, args.results))
    write_text_atomic(results / "headline.md", headline_markdown(report, args.results))
    plot_all(report, results)
    if args.readme:
        rewrite_readme(Path(args.readme), results / "headline.md")
    return report


def recovery_epochs(phase: Phase, quick: bool) -> float:
    return 0.5 if quick else phase.epochs


def fingerprint(*parts) -> str:
    """A short hash of model directories (their config and the names, sizes and times of their weight files) and
    settings: what decides whether something made or measured before can be kept."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            digest.update((part / "config.json").read_bytes())
            for file in sorted([*part.glob("*.safetensors"), *part.glob("*.onnx")]):
                stat = file.stat()
                digest.update(f"{file.name} {stat.st_size} {stat.st_mtime_ns}".encode())
        else:
            digest.update(json.dumps(part, sort_keys=True).encode())
    return digest.hexdigest()[:12]


def pruned_student(teacher: Path, student: Path, work: Path, flops: float, data: DataConfig, quick: bool) -> Path:
    """The student pruned to (1 - flops) of its encoder FLOPs, then recovered by distillation from the teacher."""
    made = work / f"pruned-{fingerprint(student, teacher, flops, data_fields(data), quick)}"
    pruned, recovered = made / "pruned", made / "recovered"
    if not (recovered / "config.json").is_file():
        if not (pruned / "config.json").is_file():
            prune(PruneConfig(model=str(student), output_dir=str(pruned), data=data, flops=flops, force=True))
        distill(DistillConfig(teacher=str(teacher), student=str(pruned), output_dir=str(recovered), data=data,
                              force=True, phases=[Phase(p.losses, recovery_epochs(p, quick)) for p in RECOVERY],
                              min_steps=0))  # the recovery as RECOVERY states it, however small the data
    return recovered


def vocabulary_pruned(student: Path, work: Path, data: DataConfig) -> Path:
    """The student with its vocabulary cut to the pieces the training texts use (and every special token and single
    character), for the vocabulary pruning row."""
    out = work / f"vocabulary-{fingerprint(student, data_fields(data))}"
    if not (out / "config.json").is_file():
        prune_vocabulary(VocabularyConfig(model=str(student), output_dir=str(out), data=data, force=True))
    return out


def exported(model_dir: Path, exports: Path, data: DataConfig) -> Path:
    """The model's ONNX export with its fp32 and INT8 (dynamic) candidates kept beside the bundle."""
    out = exports / f"{model_dir.name}-{fingerprint(model_dir, data_fields(data))}"
    if not (out / "bundle" / "tinyship.json").is_file():
        export(ExportConfig(model=str(model_dir), output=str(out / "bundle"), data=data, quantize="dynamic",
                            optimize=False, candidates_dir=str(out / "candidates"), force=True))
    return out


def data_fields(data: DataConfig) -> dict:
    return {"dataset": data.dataset, "limit": data.limit, "max_length": data.max_length}


def systems_of(common: dict, exports: Path, data: DataConfig) -> list[dict]:
    """The specs of one model's systems: PyTorch fp32 and INT8, ONNX fp32 and INT8, and the two pipelines
    (a base-size teacher: in PyTorch only; the vocabulary-pruned student: as INT8 ONNX, beside the student's)."""
    role, model_dir = common["role"], Path(common["model"])
    kept = {"base teacher": ["PyTorch fp32"], "student, vocabulary pruned": ["ONNX INT8"]}.get(role)
    onnx = {name: {} for name in ("fp32", "int8-dynamic")}
    if kept != ["PyTorch fp32"]:  # every other set needs the ONNX export
        export_dir = exported(model_dir, exports, data)
        candidates = read_manifest(export_dir / "bundle")["metrics"]["candidates"]
        onnx = {name: {"onnx": str(export_dir / "candidates" / name / "model.onnx"),
                       "config": str(export_dir / "bundle" / "config.json"),
                       "disabled_optimizers": candidates[name]["disabled_optimizers"],
                       "batch_invariant": batch_invariant_of(name)} for name in onnx}
    every = {
        "PyTorch fp32": {"engine": "pytorch", "precision": "fp32"},
        "PyTorch INT8 (torch.ao dynamic)": {"engine": "torch.ao-int8", "precision": "int8"},
        "ONNX fp32": {"engine": "onnxruntime", "precision": "fp32", **onnx["fp32"]},
        "ONNX INT8": {"engine": "onnxruntime", "precision": "int8", **onnx["int8-dynamic"]},
        "transformers pipeline": {"engine": "transformers-pipeline", "precision": "fp32"},
        "optimum pipeline (ONNX INT8)": {"engine": "optimum-pipeline", "precision": "int8", **onnx["int8-dynamic"]},
    }
    return [{**common, **every[name], "id": f"{role} · {name}"} for name in kept or every]


def bundle_systems(chosen: Path, role: str, report: dict, common: dict, runtime: bool = True) -> list[dict]:
    """A shipped bundle as its ONNX model (with the manifest's session settings) and, with runtime, through tinyship's
    runtime."""
    manifest = read_manifest(chosen)
    source = Path(manifest.get("source_model") or chosen)  # the model it was exported from, where it still is
    config = plain_config(chosen)
    report["models"][role] = {
        "dir": str(chosen), "gop_per_sequence": {str(t): config_flops(config, t) / 1e9 for t in FULL["lengths"]},
        "parameters": sum(p.numel() for p in load_model(source).parameters())
        if (source / "model.safetensors").is_file() else None}
    common = {**common, "role": role, "model": str(chosen), "fingerprint": fingerprint(chosen),
              "labels": manifest["labels"], "max_length": manifest["max_length"], "vocab_size": config["vocab_size"],
              "parameters": report["models"][role]["parameters"], "precision": manifest["precision"]}
    return [{**common, "id": f"{role} · ONNX", "engine": "onnxruntime", "onnx": str(chosen / manifest["model"]),
             "disabled_optimizers": manifest.get("session", {}).get("disabled_optimizers", []),
             "batch_invariant": batch_invariant(manifest)},
            *([{**common, "id": f"{role} · tinyship runtime", "engine": "tinyship"}] if runtime else [])]


def measured(spec: dict, store: Path) -> dict:
    """A system's measurement, in a fresh process (or as stored, when measured before from the same inputs)."""
    name = re.sub(r"[^a-z0-9]+", "-", spec["id"].lower()).strip("-")
    return stored(store / f"{name}.json", spec,
                  lambda: {**run(spec), "role": spec["role"], "precision": spec["precision"]},
                  f"{spec['id']} ({ENGINES[spec['engine']].scope})")


def stored(path: Path, settings: dict, measure, what: str) -> dict:
    """measure()'s result, kept at path with the settings it was measured with, so that a rerun resumes."""
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("settings") == settings:
            print(f"{what}: measured before, kept")
            return saved["result"]
    print(f"{what}: measuring")
    result = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"settings": settings, "result": result}, indent=2))
    return result


def reference(system: dict, systems: dict) -> str:
    """The teacher system a system is compared with: the base teacher for the base pair; else the teacher in PyTorch
    fp32 for forward systems and in transformers' pipeline for end-to-end ones (tokenization on both sides)."""
    if system["role"].startswith("base"):
        return "base teacher · PyTorch fp32"
    return "teacher · PyTorch fp32" if system["scope"] == "forward" else "teacher · transformers pipeline"


def add_ratios(report: dict) -> None:
    """Each system against its teacher (see reference()) at the headline setting; each ONNX system's achieved GOP/s
    against this CPU's ceiling; the headlines."""
    systems = {s["id"]: s for s in report["systems"]}
    at = report["settings"]["headline_at"]
    if not any(point(s, **at) for s in systems.values()):  # quick mode: the one grid point there is
        first = report["systems"][0]["latency"][0]
        at = report["settings"]["headline_at"] = {k: first[k] for k in ("batch_size", "tokens", "threads")}
    for s in report["systems"]:
        teacher = systems[reference(s, systems)]
        here, there = point(s, **at), point(teacher, **at)
        s["vs_teacher"] = {"faster": there["median_ms"] / here["median_ms"] if here and there else None,
                           "smaller": teacher["size_bytes"] / s["size_bytes"],
                           "accuracy_kept": s["accuracy"] / teacher["accuracy"] if teacher["accuracy"] else None}
        if s["engine"] == "onnxruntime" and here:
            gop = report["models"][s["role"]]["gop_per_sequence"].get(str(at["tokens"]))
            threads = at["threads"]
            kind = "int8_gops" if s["precision"] == "int8" else "fp32_gflops"  # fp16 too: this CPU computes it in fp32
            ceiling = report["ceilings"].get(f"{kind}_{threads}_thread{'s' if threads > 1 else ''}")
            if gop and ceiling:
                rate = gop * at["batch_size"] / (here["median_ms"] / 1e3)
                s["achieved"] = {"gops": rate, "of_ceiling": rate / ceiling}
    report["headline"] = [headline("built-in", "tinyship: the shipped bundle against its teacher",
                                   systems["teacher · PyTorch fp32"], systems["bundle · ONNX"])]
    if "base teacher · PyTorch fp32" in systems:
        report["headline"].append(headline("base", "tinyship, base size: the shipped bundle against its teacher",
                                           systems["base teacher · PyTorch fp32"], systems["base bundle · ONNX"]))
    before, after = systems["student · ONNX INT8"], systems["student, vocabulary pruned · ONNX INT8"]
    report["vocabulary"] = {"smaller": before["size_bytes"] / after["size_bytes"],
                            "accuracy_change": after["accuracy"] - before["accuracy"],
                            "size_bytes": [before["size_bytes"], after["size_bytes"]],
                            "accuracy": [before["accuracy"], after["accuracy"]]}
    report["papers"] = PAPERS


def headline(pair: str, name: str, teacher: dict, shipped: dict) -> dict:
    return {"method": name, "pair": pair, "teacher": teacher["id"], "system": shipped["id"],
            "smaller": teacher["size_bytes"] / shipped["size_bytes"], "faster": shipped["vs_teacher"]["faster"],
            "accuracy_kept": shipped["vs_teacher"]["accuracy_kept"], "teacher_accuracy": teacher["accuracy"],
            "accuracy": shipped["accuracy"]}


def rewrite_readme(readme: Path, headline_file: Path) -> None:
    """Replace the README's headline block (between MARKERS) with the results' headline table."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(MARKERS[0]), text.find(MARKERS[1])
    if start < 0 or end < start:
        raise TinyshipError(f"{readme} has no headline block: add the lines {MARKERS[0]} and {MARKERS[1]}")
    block = f"{MARKERS[0]}\n{headline_file.read_text(encoding='utf-8')}{MARKERS[1]}"
    write_text_atomic(readme, text[:start] + block + text[end + len(MARKERS[1]):])


if __name__ == "__main__":
    main()

"""tinyship's benchmarks: each stage's measured side by side (`python -m benchmarks.NAME.run`), and the lab they
share (benchmarks.lab: the engines users would pick, fresh-process measurement, the CPU's GEMM ceilings, plots)."""

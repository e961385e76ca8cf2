// One GEMM graph in onnxruntime-web (WASM, SIMD, 1 thread), its own instance beside the page's: the median
// milliseconds of `runs` runs after 5 warm-up runs. Called by page.evaluate with [model, input, type, dims, runs],
// the model and the input's bytes in base64.
async ([model, input, type, dims, runs]) => {
  const ort = await import("/vendor/onnxruntime-web/dist/ort.wasm.min.mjs");
  const dist = new URL("/vendor/onnxruntime-web/dist/", location.href).href;
  ort.env.wasm.wasmPaths = { mjs: dist + "ort-wasm-simd-threaded.mjs", wasm: dist + "ort-wasm-simd-threaded.wasm" };
  ort.env.wasm.numThreads = 1;
  const bytes = (text) => Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  const session = await ort.InferenceSession.create(bytes(model), { executionProviders: ["wasm"] });
  const raw = bytes(input);
  const data = type === "float32" ? new Float32Array(raw.buffer) : raw;
  const feed = { a: new ort.Tensor(type, data, dims) };
  for (let i = 0; i < 5; i++) await session.run(feed);
  const ms = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await session.run(feed);
    ms.push(performance.now() - start);
  }
  ms.sort((x, y) => x - y);
  return ms[Math.floor(ms.length / 2)];
}

// Loads a bundle's web folder (served at models/<name>/) with transformers.js, all from this server: the
// JavaScript from npm packages under vendor/, no CDN, no model hub. window.tinyship is what the tests drive.
import { env, pipeline } from "./vendor/@huggingface/transformers/dist/transformers.js";

const params = new URLSearchParams(location.search);
const name = params.get("model") ?? "model";
const threads = Number(params.get("threads") ?? 0);  // 0: onnxruntime-web's default (more than 1 when isolated)
const ort = new URL("vendor/onnxruntime-web/dist/", location.href).href;

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = "/models/";  // a path, not a URL: transformers.js checks files at a URL only when remote
env.useBrowserCache = false;
env.backends.onnx.wasm.wasmPaths = {
  mjs: ort + "ort-wasm-simd-threaded.mjs",
  wasm: ort + "ort-wasm-simd-threaded.wasm",
};
if (threads > 0) env.backends.onnx.wasm.numThreads = threads;

const $ = (id) => document.getElementById(id);

async function load() {
  const config = await (await fetch(`models/${name}/config.json`)).json();
  const task = params.get("task") ?? "text-classification";
  const classifier = await pipeline(task, name, { device: "wasm" });
  const labels = Object.keys(config.label2id ?? {}).length;
  return { classifier, labels };
}

const ready = load().then(({ classifier, labels }) => {
  const scores = async (text) => (await classifier(text, { top_k: labels || null }));
  const time = async (text, runs) => {
    await classifier(text);
    const ms = [];
    for (let i = 0; i < runs; i++) {
      const start = performance.now();
      await classifier(text);
      ms.push(performance.now() - start);
    }
    return ms;
  };
  window.tinyship.pipeline = classifier;  // transformers.js's own, for other calls
  window.tinyship.scores = scores;
  window.tinyship.time = time;
  const used = env.backends.onnx.wasm.numThreads;
  $("status").textContent = `Model loaded: onnxruntime-web (WASM, SIMD, ${used} thread${used === 1 ? "" : "s"}; ` +
    `cross-origin isolated: ${self.crossOriginIsolated ? "yes" : "no"}).`;
  $("classify").disabled = false;
  $("classify").onclick = async () => {
    const start = performance.now();
    const result = await scores($("text").value);
    $("timing").textContent = `${(performance.now() - start).toFixed(1)} ms in this browser`;
    $("scores").replaceChildren(...result.map(({ label, score }) => {
      const row = document.createElement("tr");
      row.innerHTML = `<td class="label"></td><td><div class="bar"></div></td><td class="score"></td>`;
      row.cells[0].textContent = label;
      row.cells[1].firstChild.style.width = `${(100 * score).toFixed(1)}%`;
      row.cells[2].textContent = score.toFixed(3);
      return row;
    }));
  };
  $("classify").click();
}).catch((error) => {
  $("status").textContent = `Could not load the model: ${error}`;
  throw error;
});

window.tinyship = { ready };

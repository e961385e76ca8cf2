// Loads a bundle's web folder (served at models/<name>/) with transformers.js, all from this server: the
// JavaScript from npm packages under vendor/, no CDN, no model hub. The folder's config.json names the task
// (tinyship.task): the page classifies, tags or answers. window.tinyship is what the tests and benchmarks drive.
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

// Per task: the form's words, how one input (a text, or [question, context]) runs, and how its result shows.
const TASKS = {
  "text-classification": {
    verb: "Classify", prompt: "Text to classify",
    run: (model, text, labels) => model(text, { top_k: labels || null }),
    show: (result) => result.map(({ label, score }) => row(label, score, true)),
  },
  "token-classification": {
    verb: "Tag", prompt: "Text to tag",
    run: (model, text) => model(text, { ignore_labels: [] }),  // every token's label, "O" included
    show: (result) => result.map(({ word, entity, score }) => row(`${word} · ${entity}`, score)),
  },
  "question-answering": {
    verb: "Answer", prompt: "Question", context: true,
    run: (model, [question, context]) => model(question, context),
    show: ({ answer, score }) => [row(answer || "(no answer)", score, true)],
  },
};

function row(label, score, bar = false) {
  const tr = document.createElement("tr");
  tr.innerHTML = `<td class="label"></td><td><div class="bar"></div></td><td class="score"></td>`;
  tr.cells[0].textContent = label;
  tr.cells[1].firstChild.style.width = bar ? `${(100 * score).toFixed(1)}%` : "0";
  tr.cells[2].textContent = score.toFixed(3);
  return tr;
}

async function load() {
  const config = await (await fetch(`models/${name}/config.json`)).json();
  const task = config.tinyship?.task ?? "text-classification";
  if (!TASKS[task]) throw new Error(`this page does not run ${task} models`);
  const model = await pipeline(task, name, { device: "wasm" });
  return { task, model, labels: Object.keys(config.label2id ?? {}).length };
}

const ready = load().then(({ task, model, labels }) => {
  const spec = TASKS[task];
  const run = (input) => spec.run(model, input, labels);
  const time = async (input, runs) => {
    await run(input);
    const ms = [];
    for (let i = 0; i < runs; i++) {
      const start = performance.now();
      await run(input);
      ms.push(performance.now() - start);
    }
    return ms;
  };
  Object.assign(window.tinyship, { task, run, time, pipeline: model });  // pipeline: transformers.js's own
  const used = env.backends.onnx.wasm.numThreads;
  $("status").textContent = `Model loaded (${task}): onnxruntime-web (WASM, SIMD, ${used} thread` +
    `${used === 1 ? "" : "s"}; cross-origin isolated: ${self.crossOriginIsolated ? "yes" : "no"}).`;
  $("prompt").textContent = spec.prompt;
  $("go").textContent = spec.verb;
  $("context-field").hidden = !spec.context;
  $("go").disabled = false;
  $("go").onclick = async () => {
    const input = spec.context ? [$("text").value, $("context").value] : $("text").value;
    const start = performance.now();
    const result = await run(input);
    $("timing").textContent = `${(performance.now() - start).toFixed(1)} ms in this browser`;
    $("results").replaceChildren(...spec.show(result));
  };
  if (task === "text-classification") $("go").click();
}).catch((error) => {
  $("status").textContent = `Could not load the model: ${error}`;
  throw error;
});

window.tinyship = { ready };

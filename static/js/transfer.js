// Page "/transfer": pick a dataset, choose a mode and blocks, train with live progress, inspect the result.
import { api, postJSON, showError, uploadImage } from "./api.js";

const $ = (id) => document.getElementById(id);
const errorBox = $("error");
const baseModel = document.querySelector("script[data-base-model]").dataset.baseModel;
let blocksInfo = null; // GET /api/finetune/blocks
let datasets = []; // GET /api/datasets
let events = null; // the EventSource of the running job
let currentJob = null;
let currentModel = null;

const fmt = (n) => n.toLocaleString("en-US");
const mode = () => document.querySelector("input[name=mode]:checked").value;
const dataset = () => datasets.find((d) => d.dataset_id === $("dataset-select").value) || null;

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  node.append(...children);
  return node;
}

async function guarded(action) {
  showError(errorBox, null);
  try {
    await action();
  } catch (error) {
    showError(errorBox, error);
  }
}

// --- datasets ---------------------------------------------------------------------------------------------
async function loadDatasets(select) {
  datasets = await api("/api/datasets");
  const chooser = $("dataset-select");
  chooser.replaceChildren(
    ...(datasets.length ? [] : [el("option", { value: "", textContent: "(none yet)" })]),
    ...datasets.map((d) => el("option", { value: d.dataset_id, textContent: `${d.name} (${d.num_images} images)` })),
  );
  if (select) chooser.value = select;
  else if (datasets.length) chooser.value = datasets[datasets.length - 1].dataset_id;
  showDataset();
}

function showDataset() {
  const d = dataset();
  $("classes").replaceChildren(
    ...(d ? d.classes : []).map((c) =>
      el("li", { className: "class" },
        el("strong", { textContent: c.name }), ` ${c.count} images `, el("br"),
        ...c.thumbnails.map((src) => el("img", { src, alt: c.name, width: 44, height: 44 })))),
  );
  const skipped = d ? d.skipped : [];
  $("skipped-box").hidden = !skipped.length;
  $("skipped-summary").textContent = `${skipped.length} files skipped`;
  $("skipped").replaceChildren(...skipped.map((s) => el("li", { textContent: `${s.file}: ${s.reason}` })));
  updateCount();
}

$("zip-input").addEventListener("change", () => guarded(async () => {
  const file = $("zip-input").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file, file.name);
  const created = await api("/api/datasets", { method: "POST", body: form });
  $("zip-input").value = "";
  await loadDatasets(created.dataset_id);
}));

$("demo-button").addEventListener("click", () => guarded(async () => {
  const created = await postJSON("/api/datasets/demo", {
    name: $("demo-select").value, per_class: Number($("demo-per-class").value),
  });
  await loadDatasets(created.dataset_id);
}));

$("dataset-select").addEventListener("change", showDataset);
$("dataset-delete").addEventListener("click", () => guarded(async () => {
  const d = dataset();
  if (!d) return;
  await api(`/api/datasets/${d.dataset_id}`, { method: "DELETE" });
  await loadDatasets();
}));

// --- mode and blocks ----------------------------------------------------------------------------------------
async function loadBlocks() {
  blocksInfo = await api(`/api/finetune/blocks?base_model=${encodeURIComponent(baseModel)}`);
  $("block-toggles").replaceChildren(
    ...blocksInfo.blocks.map((b) =>
      el("label", { className: "block" },
        el("input", { type: "checkbox", value: b.name, checked: b.name === "blocks.6" || b.name === "head" }),
        ` ${b.name} (${fmt(b.num_params)})`)),
  );
  $("total-count").textContent = fmt(blocksInfo.total_params);
  updateCount();
}

function chosenBlocks() {
  return [...document.querySelectorAll("#block-toggles input:checked")].map((i) => i.value);
}

function updateCount() {
  const fineTune = mode() === "fine_tune";
  $("blocks").disabled = !fineTune;
  const d = dataset();
  $("start").disabled = !d || !blocksInfo || (fineTune && !chosenBlocks().length) || Boolean(events);
  if (!blocksInfo) return;
  const numClasses = d ? d.classes.length : 0;
  let count = (blocksInfo.embedding_dim + 1) * numClasses;
  if (fineTune) {
    const chosen = new Set(chosenBlocks());
    count += blocksInfo.blocks.filter((b) => chosen.has(b.name)).reduce((sum, b) => sum + b.num_params, 0);
  }
  $("trainable-count").textContent = fmt(count);
}

document.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", updateCount));
$("block-toggles").addEventListener("change", updateCount);

// --- training -------------------------------------------------------------------------------------------------
function settings() {
  const body = {
    dataset_id: dataset().dataset_id,
    base_model: baseModel,
    mode: mode(),
    trainable: mode() === "fine_tune" ? chosenBlocks() : [],
    epochs: Number($("epochs").value),
    batch_size: Number($("batch-size").value),
    val_split: Number($("val-split").value),
    augment: $("augment").checked,
    seed: Number($("seed").value),
  };
  if ($("lr").value) body.lr = Number($("lr").value);
  if ($("model-name").value) body.name = $("model-name").value;
  return body;
}

$("start").addEventListener("click", () => guarded(async () => {
  const created = await postJSON("/api/finetune", settings());
  $("result").hidden = true;
  follow(created.job_id);
}));

$("cancel").addEventListener("click", () => guarded(async () => {
  if (currentJob) await api(`/api/finetune/${currentJob}`, { method: "DELETE" });
}));

function follow(jobId) {
  currentJob = jobId;
  $("progress-panel").hidden = false;
  $("cancel").hidden = false;
  events = new EventSource(`/api/finetune/${jobId}/events`);
  updateCount();
  events.addEventListener("progress", (message) => showJob(JSON.parse(message.data)));
  events.addEventListener("end", () => {
    events.close();
    events = null;
    $("cancel").hidden = true;
    updateCount();
  });
}

function showJob(job) {
  $("progress-bar").value = job.progress;
  const eta = job.eta_s != null && job.status === "running" ? `, about ${Math.ceil(job.eta_s)} s left` : "";
  const epoch = job.epoch ? `, epoch ${job.epoch} of ${job.epochs}` : "";
  const params = job.trainable_params ? `, ${fmt(job.trainable_params)} trainable parameters` : "";
  $("job-status").textContent = `${job.status} (${job.phase})${epoch}${eta}${params}`
    + (job.error ? `: ${job.error}` : "");
  $("progress-panel").dataset.status = job.status;
  drawCurves(job.history);
  if (job.status === "succeeded") {
    guarded(async () => {
      await loadModels();
      await showModel(job.model);
    });
  }
}

function polyline(points, dashed) {
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", dashed ? "#a12622" : "#1f4e79");
  line.setAttribute("stroke-width", "2");
  if (dashed) line.setAttribute("stroke-dasharray", "5 3");
  return line;
}

function drawChart(svg, history, trainKey, valKey, top) {
  const width = 300, height = 150, pad = 10;
  const n = Math.max(history.length - 1, 1);
  const scale = top || Math.max(...history.flatMap((h) => [h[trainKey], h[valKey]]), 1e-6);
  const point = (i, v) => [pad + (i / n) * (width - 2 * pad), height - pad - (v / scale) * (height - 2 * pad)];
  svg.replaceChildren(
    polyline(history.map((h, i) => point(i, h[trainKey])), false),
    polyline(history.map((h, i) => point(i, h[valKey])), true),
  );
}

function drawCurves(history) {
  drawChart($("loss-chart"), history, "train_loss", "val_loss", 0);
  drawChart($("accuracy-chart"), history, "train_accuracy", "val_accuracy", 1);
}

// --- the result -------------------------------------------------------------------------------------------------
async function showModel(name) {
  const model = await api(`/api/finetuned/${encodeURIComponent(name)}`);
  currentModel = model;
  const e = model.evaluation;
  $("result-name").textContent = model.name;
  $("result-summary").textContent = `Validation accuracy ${(e.accuracy * 100).toFixed(1)}% on ${e.val_count} images; `
    + `${model.mode.replace("_", " ")}, ${fmt(model.trainable_params)} trainable parameters.`;
  const header = el("tr", {}, el("th", { textContent: "true \\ predicted" }),
    ...e.classes.map((c) => el("th", { scope: "col", textContent: c })));
  const rows = e.confusion.map((row, t) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    return el("tr", {}, el("th", { scope: "row", textContent: `${e.classes[t]} (${e.per_class_accuracy[t] == null
      ? "–" : (e.per_class_accuracy[t] * 100).toFixed(0) + "%"})` }),
    ...row.map((count, p) => {
      const cell = el("td", { textContent: count, className: t === p ? "diagonal" : "" });
      cell.style.setProperty("--share", (0.6 * count / total).toFixed(3));
      cell.dataset.true = t;
      cell.dataset.predicted = p;
      cell.addEventListener("click", () => showCell(cell, t, p));
      return cell;
    }));
  });
  $("confusion").replaceChildren(header, ...rows);
  $("cell-images").replaceChildren();
  $("download-checkpoint").href = model.downloads.checkpoint;
  $("download-torchscript").href = model.downloads.torchscript;
  $("download-onnx").href = model.downloads.onnx;
  $("open-classify").href = `/?${new URLSearchParams({ model: model.name })}`;
  $("try-predictions").replaceChildren();
  $("result").hidden = false;
}

function showCell(cell, t, p) {
  document.querySelectorAll("#confusion td.selected").forEach((c) => c.classList.remove("selected"));
  cell.classList.add("selected");
  const e = currentModel.evaluation;
  const label = `${e.classes[t]} predicted as ${e.classes[p]}`;
  if (t === p) {
    $("cell-images").replaceChildren(el("p", { textContent: `${cell.textContent} ${e.classes[t]} images classified correctly.` }));
    return;
  }
  const wrong = e.misclassified.filter((m) => m.true === t && m.predicted === p);
  $("cell-images").replaceChildren(
    el("p", { textContent: `${wrong.length} ${label}:` }),
    ...wrong.map((m) => el("img", {
      src: `/api/datasets/${currentModel.dataset_id}/images/${m.index}`, alt: label, title: `image ${m.index}`,
    })),
  );
}

async function tryModel(ref) {
  const result = await postJSON("/api/classify", { ...ref, model: currentModel.name, top_k: 3 });
  $("try-predictions").replaceChildren(
    ...result.predictions.map((p) => el("li", { textContent: `${p.label}: ${(p.probability * 100).toFixed(1)}%` })),
  );
}

document.querySelectorAll(".try-sample").forEach((b) =>
  b.addEventListener("click", () => guarded(() => tryModel({ sample: b.dataset.sample }))));
$("try-file").addEventListener("change", () => guarded(async () => {
  const file = $("try-file").files[0];
  if (!file) return;
  const uploaded = await uploadImage(file);
  await tryModel({ image_id: uploaded.image_id });
}));

async function loadModels() {
  const models = await api("/api/finetuned");
  $("models").replaceChildren(...models.map((m) => {
    const show = el("button", { type: "button", textContent: "show" });
    show.addEventListener("click", () => guarded(() => showModel(m.name)));
    const remove = el("button", { type: "button", textContent: "delete" });
    remove.addEventListener("click", () => guarded(async () => {
      await api(`/api/finetuned/${encodeURIComponent(m.name)}`, { method: "DELETE" });
      if (currentModel && currentModel.name === m.name) $("result").hidden = true;
      await loadModels();
    }));
    return el("li", { className: "model" },
      el("strong", { textContent: m.name }),
      ` ${m.classes.length} classes, ${m.mode.replace("_", " ")}, accuracy ${(m.evaluation.accuracy * 100).toFixed(1)}% `,
      show, " ", remove);
  }));
}

guarded(async () => {
  await Promise.all([loadDatasets(), loadBlocks(), loadModels()]);
});

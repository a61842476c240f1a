// Page "/": choose an image (file, drop, paste or sample), classify it, show what the model sees.
import { postJSON, showError, uploadImage } from "./api.js";

const $ = (id) => document.getElementById(id);
const dropzone = $("dropzone");
const fileInput = $("file-input");
const modelSelect = $("model-select");
const errorBox = $("error");
let current = null; // {image_id} or {sample}

function query(ref, model) {
  const params = new URLSearchParams({ ...ref, model });
  return `/api/model-input?${params}`;
}

async function classify() {
  if (!current) return;
  const model = modelSelect.value;
  showError(errorBox, null);
  document.body.classList.add("busy");
  try {
    const result = await postJSON("/api/classify", { ...current.ref, model, top_k: 5 });
    $("model-input").src = query(current.ref, model);
    renderPredictions(result);
    $("result").hidden = false;
  } catch (error) {
    showError(errorBox, error);
  } finally {
    document.body.classList.remove("busy");
  }
}

function renderPredictions(result) {
  const list = $("predictions");
  list.replaceChildren(
    ...result.predictions.map((p) => {
      const item = document.createElement("li");
      item.className = "prediction";
      const label = document.createElement("span");
      label.className = "label";
      label.textContent = p.label;
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.setProperty("--p", p.probability.toFixed(4));
      const value = document.createElement("span");
      value.className = "value";
      value.textContent = `${(p.probability * 100).toFixed(1)}%`;
      item.append(label, bar, value);
      return item;
    }),
  );
  const t = result.timings_ms;
  const shared = result.forward_batch > 1 ? ` (shared with ${result.forward_batch - 1} other images)` : "";
  $("timings").textContent =
    `${result.model}: preprocessing ${t.preprocess} ms, forward pass ${t.queue_and_forward} ms${shared}`;
  const option = modelSelect.selectedOptions[0];
  $("input-size").textContent = option ? option.dataset.size || "" : "";
}

function showOriginal(src, width, height) {
  $("original").src = src;
  $("original-size").textContent = `(${width}×${height})`;
}

async function useFile(file) {
  if (!file) return;
  showError(errorBox, null);
  try {
    const created = await uploadImage(file);
    current = { ref: { image_id: created.image_id } };
    showOriginal(`/api/images/${created.image_id}`, created.width, created.height);
    await classify();
  } catch (error) {
    $("result").hidden = true;
    showError(errorBox, error);
  }
}

fileInput.addEventListener("change", () => useFile(fileInput.files[0]));
dropzone.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropzone.classList.add("over");
});
dropzone.addEventListener("dragleave", () => dropzone.classList.remove("over"));
dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropzone.classList.remove("over");
  useFile(event.dataTransfer.files[0]);
});
document.addEventListener("paste", (event) => {
  const item = [...(event.clipboardData?.items || [])].find((i) => i.kind === "file");
  if (item) useFile(item.getAsFile());
});
for (const button of document.querySelectorAll("button.sample")) {
  button.addEventListener("click", () => {
    const img = button.querySelector("img");
    current = { ref: { sample: button.dataset.sample } };
    showOriginal(img.src, img.naturalWidth, img.naturalHeight);
    classify();
  });
}
// "/?model=NAME" (the transfer page links here) preselects a model, if it can be chosen
const wanted = new URLSearchParams(window.location.search).get("model");
const wantedOption = wanted && [...modelSelect.options].find((o) => o.value === wanted && !o.disabled);
if (wantedOption) modelSelect.value = wanted;

function describeModel() {
  const option = modelSelect.selectedOptions[0];
  $("model-summary").textContent = option ? option.dataset.summary : "";
}

modelSelect.addEventListener("change", () => {
  describeModel();
  classify();
});
describeModel();

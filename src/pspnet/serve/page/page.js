// The page of 'pspnet serve': send an image to POST /v1/segment?format=json, show the palette PNG it answers over
// the photo, the classes present with their shares, and offer the mask for download. No build step, no library.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { objectUrl: null };

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function loadModel() {
  try {
    const info = await (await fetch("/v1/model")).json();
    const arch = info.architecture || {};
    const name = info.card && info.card.dataset ? ` on ${info.card.dataset}` : "";
    $("model-name").textContent =
      `PSPNet ResNet-${arch.depth ?? "?"}${name}: ${info.classes.length} classes, ${info.inference.precision}`;
  } catch (error) {
    $("model-name").textContent = "model information unavailable";
  }
}

function query() {
  const params = new URLSearchParams({ format: "json" });
  if ($("mode").value) params.set("mode", $("mode").value);
  if ($("scales").value.trim()) params.set("scales", $("scales").value.trim());
  if ($("flip").checked) params.set("flip", "true");
  return params.toString();
}

function showLegend(classes) {
  const body = $("legend").querySelector("tbody");
  body.replaceChildren();
  for (const entry of classes) {
    const row = document.createElement("tr");
    row.className = "legend-entry";
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${entry.color.join(",")})`;
    const cells = [swatch, entry.name, `${(100 * entry.share).toFixed(1)}%`];
    cells.forEach((content, i) => {
      const cell = document.createElement("td");
      if (i === 1) cell.className = "name";
      if (i === 2) cell.className = "share";
      cell.append(content);
      row.append(cell);
    });
    body.append(row);
  }
}

async function segment(file) {
  if (!file) return;
  setStatus(`segmenting ${file.name}…`);
  const form = new FormData();
  form.append("image", file);
  const started = performance.now();
  let answer;
  try {
    const response = await fetch(`/v1/segment?${query()}`, { method: "POST", body: form });
    answer = await response.json();
    if (!response.ok) throw new Error(`${response.status}: ${answer.error}`);
  } catch (error) {
    setStatus(`failed: ${error.message}`, true);
    return;
  }
  if (state.objectUrl) URL.revokeObjectURL(state.objectUrl);
  state.objectUrl = URL.createObjectURL(file);
  const maskUrl = `data:image/png;base64,${answer.mask_png_base64}`;
  $("photo").src = state.objectUrl;
  $("mask").src = maskUrl;
  $("download").href = maskUrl;
  $("download").download = `${file.name.replace(/\.[^.]*$/, "")}_mask.png`;
  $("download").hidden = false;
  showLegend(answer.classes);
  $("result").hidden = false;
  $("result").dataset.ready = "true";
  const seconds = ((performance.now() - started) / 1000).toFixed(2);
  setStatus(`${file.name}: ${answer.width}x${answer.height}, ${answer.classes.length} classes, ${seconds} s`);
}

$("opacity").addEventListener("input", () => { $("mask").style.opacity = $("opacity").value; });
$("mask").style.opacity = $("opacity").value;
$("file").addEventListener("change", () => segment($("file").files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  segment(event.dataTransfer.files[0]);
});
loadModel();

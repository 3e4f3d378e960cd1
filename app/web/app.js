// MedScan's page: a client of the public API (GET /models, POST /predict/{disease}); no framework, no build.
"use strict";

const CHUNK = 8; // images per request: batched on the server, and a progress step per request here
const METRICS = [
  ["accuracy", "Accuracy", true], ["sensitivity", "Sensitivity", true], ["specificity", "Specificity", true],
  ["precision", "Precision", true], ["f1", "F1", false], ["roc_auc", "ROC AUC", false],
];
// The kinds of image a model card names (its `modality`, app/contract/modality.py), in words.
const KIND_WORDS = {
  blood_smear_cell: "a single blood-smear cell", chest_xray: "a chest X-ray", brain_mri: "a brain MRI slice",
  breast_ultrasound: "a breast ultrasound image", fundus_photograph: "a colour fundus photograph",
  other: "something other than the medical images MedScan knows",
};
const kindWords = (kind, fallback) => KIND_WORDS[kind] || fallback;

// What the service's modality check measured for this model's kind of image, in one sentence.
function modalityCheckWords(kind) {
  const check = state.modalityCheck;
  const figure = check && kind && check.figures && check.figures[kind];
  if (!figure) return "";
  return ` The service's modality check answers "wrong kind of image" for anything that is not ${kindWords(kind, kind)}; ` +
    `it recognised ${(figure.recognised * 100).toFixed(1)}% of ${figure.n_images} test images of this kind.`;
}
// What each API error code means to a person.
const MESSAGES = {
  unsupported_media_type: "This file is not an image MedScan can read. Send PNG, JPEG, TIFF, BMP, GIF or DICOM.",
  corrupt_image: "This file could not be decoded as an image; it may be damaged or incomplete.",
  empty_file: "This file is empty.",
  image_too_large: "This image has too many pixels for the service. Send a smaller image.",
  body_too_large: "These files are too large to send at once. Send fewer or smaller images.",
  too_many_images: "Too many images in one request. Send fewer at a time.",
  unknown_disease: "The service has no model for this disease.",
  model_unavailable: "This model is not available right now (it did not load). Try another model or ask the operator.",
  overloaded: "The service is busy. Wait a few seconds and try again.",
  explanation_unavailable: "This model version cannot show where it looked; untick Grad-CAM and try again.",
  invalid_request: "The service did not understand the request.",
  unauthorized: "This service needs an API key: enter it under 'API key' below.",
  network: "The service could not be reached. Check your connection and try again.",
};

const state = { models: new Map(), files: [], rows: [], busy: false, csvUrl: null, modalityCheck: null };
const $ = (id) => document.getElementById(id);
const KEY_STORAGE = "medscan-api-key";

function apiHeaders() {
  const key = sessionStorage.getItem(KEY_STORAGE);
  return key ? { Accept: "application/json", Authorization: `Bearer ${key}` } : { Accept: "application/json" };
}
let uid = 0;

function percent(value) {
  return value == null ? "-" : `${(100 * value).toFixed(1)}%`;
}

function interval(card, name, scale) {
  const range = card.metrics.intervals && card.metrics.intervals[name];
  if (!range) return "";
  const show = (v) => (scale ? (100 * v).toFixed(1) : v.toFixed(3));
  return ` (95% CI ${show(range[0])}${scale ? "%" : ""} to ${show(range[1])}${scale ? "%" : ""})`;
}

function element(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text != null) node.textContent = text;
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  return node;
}

async function loadModels() {
  const select = $("disease");
  try {
    const response = await fetch("/models", { headers: apiHeaders() });
    const body = await response.json();
    if (response.status === 401) {
      select.replaceChildren(element("option", "Enter the API key to see the models", { value: "" }));
      $("access").open = true;
      setStatus(MESSAGES.unauthorized, true);
      return;
    }
    if (!response.ok) throw new Error((body.error && body.error.message) || response.statusText);
    setStatus("");
    state.modalityCheck = body.modality_check || null;
    select.replaceChildren(element("option", "Choose a model", { value: "" }));
    for (const model of body.models) {
      state.models.set(model.disease, model);
      const ready = model.status === "ready";
      const what = model.card ? model.card.description : model.error || model.status;
      const option = element("option", `${model.disease.replace("_", " ")}: ${what}${ready ? "" : " (unavailable)"}`,
                             { value: model.disease });
      option.disabled = !ready;
      select.append(option);
    }
    const first = body.models.find((m) => m.status === "ready");
    if (first) select.value = first.disease;
    showModel();
  } catch (error) {
    select.replaceChildren(element("option", "No models: the service could not be reached", { value: "" }));
    setStatus(MESSAGES.network, true);
  }
}

function showModel() {
  const model = state.models.get($("disease").value);
  const summary = $("model-summary");
  const body = $("model-card-body");
  if (!model || !model.card) {
    summary.textContent = "";
    body.replaceChildren(element("p", "Choose a model to see its card."));
    return;
  }
  const card = model.card;
  const input = card.input;
  summary.textContent = `Version ${card.version}. Expects ${kindWords(card.modality, "images like its training data")}; ` +
    `${PREPARATION[input.enhancement] || ""}resized to ${input.width}x${input.height} ${input.colour_mode}` +
    `${AFTER_RESIZE[input.enhancement] || ""}. ` +
    `Intended use: ${card.intended_use}.` + modalityCheckWords(card.modality);
  const explain = $("explain");
  explain.disabled = !model.explainable;
  if (!model.explainable) explain.checked = false;
  body.replaceChildren(...cardContents(card));
}

const PREPARATION = { fundus: "cropped to the eye disc, colour and contrast normalised, " };
const AFTER_RESIZE = { contrast: ", contrast evened out locally (CLAHE)" };

function crossValidation(cv) {
  if (!cv) return "not cross-validated yet";
  const spread = (summary, name, scale) => {
    const figure = summary[name];
    if (!figure) return null;
    return scale ? `${(100 * figure.mean).toFixed(1)}% \u00b1 ${(100 * figure.std).toFixed(1)}`
                 : `${figure.mean.toFixed(3)} \u00b1 ${figure.std.toFixed(3)}`;
  };
  const figures = (summary, names) => names
    .map(([name, title, scale]) => [title, spread(summary, name, scale)]).filter(([, text]) => text)
    .map(([title, text]) => `${title} ${text}`).join(", ");
  const rates = [["accuracy", "accuracy", true], ["sensitivity", "sensitivity", true],
                 ["specificity", "specificity", true]];
  // the service answers at the screening threshold, so that is the figure a user meets; 0.5 for comparison
  const served = cv.screening
    ? `at the screening threshold (chosen for ${percent(cv.screening.target_sensitivity)} sensitivity on each ` +
      `round's validation patients): ${figures(cv.screening.summary, rates)}; at 0.5: `
    : "";
  return `${cv.folds}-fold grouped cross-validation of this recipe (${cv.images} images of ${cv.groups} ` +
    `patients): ${served}${figures(cv.summary, [...rates, ["roc_auc", "ROC AUC", false]])}` +
    (cv.differences.length ? `; the cross-validated recipe differed in ${cv.differences.join(", ")}` : "");
}

// A start pretrained on the other data sets (training/networks/pretrain.py) is part of what the model is.
function calibrationText(calibration) {
  // A card before Platt scaling has no bias: temperature scaling only.
  const temperature = `temperature ${calibration.temperature.toFixed(2)}`;
  if (calibration.method === "platt") return `Platt scaling: ${temperature}, bias ${calibration.bias.toFixed(2)}`;
  return temperature;
}

function pretrainedStart(pretraining) {
  if (!pretraining) return "";
  const sets = Object.entries(pretraining.pretrained_on).map(([disease, images]) => `${disease} (${images})`);
  return `; started from the paper's CNN pretrained on ${sets.join(", ")} images of the other data sets, ` +
    "none of this one's";
}

function cardContents(card) {
  const parts = [element("p", card.description)];
  const table = element("table");
  table.append(element("caption", `Test part: ${card.metrics.n_images} images of patients not used in training`));
  const head = element("tr");
  head.append(element("th", "Metric", { scope: "col" }), element("th", "Value (95% interval over patients)", { scope: "col" }));
  table.append(head);
  for (const [name, title, scale] of METRICS) {
    const value = card.metrics[name];
    if (value == null) continue;
    const row = element("tr");
    row.append(element("th", title, { scope: "row" }),
               element("td", (scale ? percent(value) : value.toFixed(3)) + interval(card, name, scale)));
    table.append(row);
  }
  parts.push(table);
  const facts = element("dl");
  const fact = (term, text) => { if (text) facts.append(element("dt", term), element("dd", text)); };
  if (card.screening) {
    const test = card.screening.test;
    fact("Screening threshold", `${card.screening.threshold.toFixed(3)} on the calibrated probability, chosen for ` +
      `${percent(card.screening.target_sensitivity)} sensitivity` +
      (test ? `; on the test part: sensitivity ${percent(test.sensitivity)}, specificity ${percent(test.specificity)}` : ""));
  }
  fact("On patients not seen in training", crossValidation(card.cross_validation));
  if (card.by_grade && card.by_grade.length) {
    fact("By grade (test part, at the screening threshold)", card.by_grade.map((g) =>
      `grade ${g.grade} (${g.label}, ${g.n_images} images): ${percent(g.flagged_infected)} answered infected`).join("; "));
  }
  const confound = card.source_confound;
  if (confound) {
    // a shortcut through source or camera inflates every figure above; the card says how big it is
    fact("Disease-blind baseline", `a linear model on ${confound.features.length} global colour and border ` +
      `statistics of the pixels this model is fed separates the classes with ROC AUC ` +
      `${confound.fold_mean.toFixed(3)} \u00b1 ${confound.fold_std.toFixed(3)} on held-out patients (0.5: no such ` +
      "shortcut; the higher, the more of the figures above may come from source or camera, not the disease)");
  }
  if (card.test_time_flips && card.test_time_flips.length) {
    fact("Test-time flips", `answers for the image as sent and flipped (${card.test_time_flips.join(", ")}): ` +
      "the mean probability over every combination of the flips");
  }
  if (card.ensemble_of && card.ensemble_of.length) {
    const members = card.ensemble_of.map((m) => `version ${m.version} (${m.architecture}, ` +
      `${m.input ? `reads ${m.input[0]}x${m.input[1]} px, ` : ""}${m.recipe} recipe, ` +
      `${m.initial_weights === "none" ? "from scratch" : "from a pretrained backbone"})`);
    fact("Ensemble", `the mean probability of ${members.length} networks, each one more pass per image: ` +
      members.join("; "));
  }
  if (card.kernel_bits === 16) {
    fact("Weights", "convolution and dense kernels stored at 16 bits, computed at 32 (the figures are measured so)");
  }
  if (card.calibration) fact("Calibration", `${calibrationText(card.calibration)}. ${card.calibration.selection}`);
  if (card.out_of_distribution) fact("Out-of-distribution check", card.out_of_distribution.method);
  fact("Data source", card.data.source);
  fact("Split", card.data.split);
  fact("Training", `${card.training.recipe} recipe, ${card.training.epochs_run} epochs, ${Math.round(card.training.seconds / 60)} min on ${card.training.machine}` +
    pretrainedStart(card.training.settings.pretraining));
  fact("Intended use", card.intended_use);
  parts.push(facts);
  if (card.generalisation) parts.push(...generalisationTable(card.generalisation));
  if (card.data.caveats.length) {
    parts.push(element("h3", "Caveats"));
    const list = element("ul");
    for (const caveat of card.data.caveats) list.append(element("li", caveat));
    parts.push(list);
  }
  const link = element("a", "The whole card as JSON", { href: `/models/${encodeURIComponent(card.disease)}` });
  const linkParagraph = element("p");
  linkParagraph.append(link);
  parts.push(linkParagraph);
  return parts;
}

// Per site: unseen patients of a site the model trained at, beside the whole site held out of training
// (the estimate for a hospital it has never seen).
function generalisationTable(generalisation) {
  const table = element("table", null, { class: "generalisation" });
  table.append(element("caption", "At each site: new patients of a known site, and the site never seen in training"));
  const head = element("tr");
  for (const title of ["Site", "Images", "Unseen patients: AUC", "Site held out: AUC (95% interval)",
                       "Held out: sensitivity / specificity at the screening threshold", "Held out: ECE",
                       "Held out: flagged unlike the training sites"]) {
    head.append(element("th", title, { scope: "col" }));
  }
  table.append(head);
  const number = (value) => (value == null ? "–" : value.toFixed(3));
  for (const site of generalisation.sites) {
    const within = site.within || {};
    const out = site.held_out;
    const auc = out ? number(out.roc_auc) + (out.intervals && out.intervals.roc_auc ?
      ` (${out.intervals.roc_auc[0].toFixed(3)}–${out.intervals.roc_auc[1].toFixed(3)})` : "") : "not measured";
    const row = element("tr");
    row.append(element("th", site.site, { scope: "row" }), element("td", String(site.n_images)),
               element("td", number(within.roc_auc)), element("td", auc),
               // an ensemble's held-out figures are its members' mean answer: AUC only (the card's method says so)
               element("td", out && out.screening ?
                 `${percent(out.screening.sensitivity)} / ${percent(out.screening.specificity)}` : "–"),
               element("td", out && out.ece ? number(out.ece.after) : "–"),
               element("td", out && out.site_shift ? percent(out.site_shift.flagged) : "–"));
    table.append(row);
  }
  return [element("h3", "Other hospitals"), table];
}

function chooseFiles(fileList) {
  state.files = Array.from(fileList);
  const names = state.files.map((f) => f.name).join(", ");
  $("chosen").textContent = state.files.length ? `${state.files.length} chosen: ${names}` : "No images chosen.";
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("is-error", isError);
}

function newRow(file) {
  const node = $("result-template").content.firstElementChild.cloneNode(true);
  const id = `r${++uid}`;
  node.id = id;
  node.querySelector(".filename").textContent = file.name;
  const original = node.querySelector(".original");
  original.alt = `${file.name} as chosen`;
  original.src = URL.createObjectURL(file);
  original.addEventListener("error", () => {
    original.hidden = true;
    node.querySelector(".no-preview").hidden = false;
  });
  const toggle = node.querySelector(".overlay-toggle");
  toggle.id = `${id}-toggle`;
  node.querySelector(".overlay-toggle-label").htmlFor = toggle.id;
  const opacity = node.querySelector(".opacity");
  opacity.id = `${id}-opacity`;
  node.querySelector(".opacity-label").htmlFor = opacity.id;
  const overlay = node.querySelector(".overlay");
  toggle.addEventListener("change", () => { overlay.hidden = !toggle.checked; });
  opacity.addEventListener("input", () => {
    overlay.style.opacity = opacity.value / 100;
    opacity.setAttribute("aria-valuetext", `${opacity.value}%`);
  });
  node.querySelector(".label").textContent = "Waiting…";
  node.setAttribute("aria-busy", "true");
  $("results").append(node);
  return { node, file };
}

function showPrediction(row, prediction) {
  const { node } = row;
  node.removeAttribute("aria-busy");
  node.classList.add(`is-${prediction.label}`);
  const infected = prediction.probabilities.infected;
  const uninfected = prediction.probabilities.uninfected;
  node.querySelector(".label").textContent = prediction.label === "infected" ? "Infected (positive)" : "Uninfected (negative)";
  node.querySelector(".bar-infected").style.width = `${infected}%`;
  node.querySelector(".bar").setAttribute("aria-label", `infected ${infected}%, uninfected ${uninfected}%`);
  node.querySelector(".percentages").textContent = `infected ${infected.toFixed(1)}% · uninfected ${uninfected.toFixed(1)}%`;
  // the share of disease the percentages hold at: the calibration's, or the clinic's where one was set
  const prevalence = prediction.prevalence == null ? "" : ` · for ${(prediction.prevalence * 100).toFixed(0)}% prevalence`;
  node.querySelector(".meta").textContent = `Threshold ${prediction.threshold.toFixed(3)}${prevalence} · ${prediction.disease} model version ` +
    `${prediction.model_version}` + (prediction.image ? ` · image ${prediction.image.width}x${prediction.image.height}` : "");
  if (prediction.in_distribution === false) {
    const warning = node.querySelector(".warning");
    warning.hidden = false;
    const expected = prediction.modality ? prediction.modality.expected : state.models.get(prediction.disease)?.card?.modality;
    const seen = prediction.modality ? ` It looks like ${kindWords(prediction.modality.kind, "something else")}.` : "";
    warning.textContent = `This does not look like ${kindWords(expected, "the model's training images")}; ` +
      `do not trust the label.${seen} (` + prediction.warning + ")";
    node.classList.add("is-out-of-distribution");
  } else if (prediction.warning) {
    // answered, but from another site's kind of image or without colour: the label stands, with a caveat
    const notice = node.querySelector(".notice");
    notice.hidden = false;
    notice.textContent = prediction.warning;
  }
  if (prediction.explanation) {
    const overlay = node.querySelector(".overlay");
    overlay.src = `data:image/png;base64,${prediction.explanation.overlay_png}`;
    overlay.alt = `Grad-CAM heatmap of ${row.file.name}: red marks what drove the answer '${prediction.label}'`;
    overlay.style.opacity = 0.7;
    overlay.hidden = false;
    node.querySelector(".overlay-controls").hidden = false;
  }
  row.prediction = prediction;
}

function showError(row, error) {
  const { node } = row;
  node.removeAttribute("aria-busy");
  node.classList.add("is-error");
  const message = MESSAGES[error.code] || error.message || "Something went wrong.";
  const text = node.querySelector(".error");
  text.hidden = false;
  text.textContent = message + (error.message && MESSAGES[error.code] ? ` (${error.message})` : "");
  node.querySelector(".label").textContent = "No answer";
  node.querySelector(".bar").hidden = true;
  row.error = error;
}

async function screenChunk(disease, rows, explain) {
  const form = new FormData();
  for (const row of rows) form.append("file", row.file, row.file.name);
  const url = `/predict/${encodeURIComponent(disease)}${explain ? "?explain=true" : ""}`;
  let response, body;
  try {
    response = await fetch(url, { method: "POST", body: form, headers: apiHeaders() });
    body = await response.json();
  } catch (error) {
    rows.forEach((row) => showError(row, { code: "network", message: "" }));
    return;
  }
  if (!response.ok) {
    const error = body.error || { code: "http_error", message: response.statusText };
    rows.forEach((row) => showError(row, error));
  } else if (body.results) {
    body.results.forEach((item, i) => (item.error ? showError(rows[i], item.error) : showPrediction(rows[i], item)));
  } else {
    showPrediction(rows[0], body);
  }
}

async function screen(event) {
  event.preventDefault();
  if (state.busy) return;
  const disease = $("disease").value;
  if (!disease) { setStatus("Choose a model first.", true); $("disease").focus(); return; }
  if (!state.files.length) { setStatus("Choose one or more images first.", true); $("files").focus(); return; }
  state.busy = true;
  $("screen").disabled = true;
  const rows = state.files.map(newRow);
  state.rows.push(...rows);
  const progress = $("progress-bar");
  $("progress").hidden = false;
  progress.max = rows.length;
  progress.value = 0;
  const explain = $("explain").checked && !$("explain").disabled;
  for (let start = 0; start < rows.length; start += CHUNK) {
    $("progress-text").textContent = `Screening ${Math.min(start + CHUNK, rows.length)} of ${rows.length}…`;
    await screenChunk(disease, rows.slice(start, start + CHUNK), explain);
    progress.value = Math.min(start + CHUNK, rows.length);
  }
  $("progress").hidden = true;
  const failed = rows.filter((r) => r.error).length;
  setStatus(`Screened ${rows.length - failed} of ${rows.length} image${rows.length === 1 ? "" : "s"}` +
            (failed ? `; ${failed} could not be screened (see the message beside each).` : "."), failed > 0);
  state.busy = false;
  $("screen").disabled = false;
  updateDownload();
}

function csvCell(value) {
  let text = value == null ? "" : String(value);
  if (/^[=+\-@]/.test(text)) text = `'${text}`; // keep spreadsheets from running a file name as a formula
  return /[",\n\r]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

function updateDownload() {
  const header = ["file", "disease", "model_version", "label", "infected_percent", "uninfected_percent", "threshold",
                  "in_distribution", "error"];
  const lines = [header.join(",")];
  for (const row of state.rows) {
    const p = row.prediction;
    const cells = p
      ? [row.file.name, p.disease, p.model_version, p.label, p.probabilities.infected, p.probabilities.uninfected,
         p.threshold, p.in_distribution, ""]
      : [row.file.name, $("disease").value, "", "", "", "", "", "", row.error ? row.error.code : ""];
    lines.push(cells.map(csvCell).join(","));
  }
  if (state.csvUrl) URL.revokeObjectURL(state.csvUrl);
  state.csvUrl = URL.createObjectURL(new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" }));
  const link = $("download");
  link.href = state.csvUrl;
  link.hidden = state.rows.length === 0;
}

function clearResults() {
  for (const row of state.rows) URL.revokeObjectURL(row.node.querySelector(".original").src);
  state.rows = [];
  $("results").replaceChildren();
  setStatus("");
  updateDownload();
}

function wireDropZone() {
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => { event.preventDefault(); zone.classList.add("is-over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("is-over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("is-over");
    chooseFiles(event.dataTransfer.files);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("disease").addEventListener("change", showModel);
  $("files").addEventListener("change", (event) => chooseFiles(event.target.files));
  $("screen-form").addEventListener("submit", screen);
  $("clear").addEventListener("click", clearResults);
  $("api-key").value = sessionStorage.getItem(KEY_STORAGE) || "";
  $("api-key").addEventListener("change", (event) => {
    sessionStorage.setItem(KEY_STORAGE, event.target.value.trim());
    loadModels();
  });
  wireDropZone();
  loadModels();
});

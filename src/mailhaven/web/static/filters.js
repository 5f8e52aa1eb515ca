// The Filters page: rules and the raw Sieve script (POST /filters/state, web/filters.py) and
// the out-of-office form (JMAP VacationResponse, RFC 8621 8). Both edit the account's managed
// Sieve script; a script that does not compile comes back with the compiler's line and
// column, shown beside the editor with the caret on the spot.
import { JMAPClient } from "./jmap.js";
import { el, clear, toast } from "./dom.js";

const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
const FIELDS = [["from", "From contains"], ["to", "To or Cc contains"], ["subject", "Subject contains"],
                ["list-id", "List-Id contains"]];
const ACTIONS = [["move", "Move to folder"], ["flag", "Flag it"], ["read", "Mark as read"],
                 ["forward", "Forward to"], ["delete", "Delete it"]];

function select(name, options, value) {
  return el("select", { name, "aria-label": name },
    options.map(([v, label]) => el("option", { value: v, selected: v === value }, label)));
}

function ruleRow(rule) {
  const target = el("input", { name: "target", type: "text", "aria-label": "folder or address",
                               value: rule.action === "forward" ? rule.address : rule.folder });
  const keep = el("input", { name: "keepCopy", type: "checkbox", checked: rule.keepCopy !== false });
  const keepLabel = el("label", { class: "inline keep-copy" }, keep, " keep a copy");
  const action = select("action", ACTIONS, rule.action);
  const sync = () => {
    target.hidden = !["move", "forward"].includes(action.value);
    target.placeholder = action.value === "forward" ? "someone@example.com" : "Folder";
    keepLabel.hidden = action.value !== "forward";
  };
  action.addEventListener("change", sync);
  const remove = el("button", { type: "button", class: "quiet remove-rule", "aria-label": "Remove rule" }, "Remove");
  const row = el("li", { class: "rule" }, select("field", FIELDS, rule.field),
    el("input", { name: "contains", type: "text", "aria-label": "text", value: rule.contains, placeholder: "text" }),
    action, target, keepLabel, remove);
  remove.addEventListener("click", () => row.remove());
  sync();
  return row;
}

function readRules() {
  return [...document.querySelectorAll("#rules li.rule")].map((row) => {
    const get = (name) => row.querySelector(`[name="${name}"]`);
    const action = get("action").value;
    const target = get("target").value.trim();
    return { field: get("field").value, contains: get("contains").value, action,
             folder: action === "move" ? target : "", address: action === "forward" ? target : "",
             keepCopy: get("keepCopy").checked };
  });
}

function showScriptError(error) {
  const box = document.getElementById("raw-error");
  const editor = document.getElementById("raw-script");
  if (!error) { box.hidden = true; editor.classList.remove("has-error"); return; }
  box.textContent = error.line ? `Line ${error.line}, column ${error.column}: ${error.message}` : error.message;
  box.hidden = false;
  editor.classList.add("has-error");
  if (error.line) {                                   // put the caret where the compiler stopped
    const lines = editor.value.split("\n");
    let offset = 0;
    for (let i = 0; i < error.line - 1 && i < lines.length; i++) offset += lines[i].length + 1;
    offset += Math.max(0, error.column - 1);
    editor.focus();
    editor.setSelectionRange(offset, offset);
  }
}

// The rules and raw script as loaded (web/filters.py): a save refused when they changed
// elsewhere meanwhile (409), rather than written over.
let filtersBase = "";

async function saveFilters() {
  const status = document.getElementById("filters-status");
  status.textContent = "Saving…";
  const res = await fetch("/filters/state", {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken },
    body: JSON.stringify({ rules: readRules(), raw: document.getElementById("raw-script").value, base: filtersBase }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    status.textContent = "Not saved";
    const error = body.error || { message: `HTTP ${res.status}` };
    if (body.where === "raw") showScriptError(error);
    else { showScriptError(null); toast(error.message, true); }
    return;
  }
  showScriptError(null);
  filtersBase = body.base;
  status.textContent = "Saved";
}

// datetime-local (the browser's local time) <-> UTCDate (RFC 8620 1.4)
function toUtc(local) { return local ? new Date(local).toISOString().replace(/\.\d+Z$/, "Z") : null; }
function toLocal(utc) {
  if (!utc) return "";
  const d = new Date(utc);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

async function loadVacation(jmap) {
  const got = await jmap.call("VacationResponse/get", { ids: ["singleton"] });
  const v = got.list[0];
  document.getElementById("vacation-enabled").checked = v.isEnabled;
  document.getElementById("vacation-from").value = toLocal(v.fromDate);
  document.getElementById("vacation-to").value = toLocal(v.toDate);
  document.getElementById("vacation-subject").value = v.subject || "";
  document.getElementById("vacation-body").value = v.textBody || "";
}

async function saveVacation(jmap) {
  const status = document.getElementById("vacation-status");
  status.textContent = "Saving…";
  const text = document.getElementById("vacation-body").value;
  const subject = document.getElementById("vacation-subject").value.trim();
  const patch = {
    isEnabled: document.getElementById("vacation-enabled").checked,
    fromDate: toUtc(document.getElementById("vacation-from").value),
    toDate: toUtc(document.getElementById("vacation-to").value),
    subject: subject || null, textBody: text || null,
  };
  const out = await jmap.call("VacationResponse/set", { update: { singleton: patch } });
  if (out.notUpdated && out.notUpdated.singleton) {
    status.textContent = "Not saved";
    toast(out.notUpdated.singleton.description || out.notUpdated.singleton.type, true);
    return;
  }
  status.textContent = "Saved";
}

async function start() {
  const res = await fetch("/filters/state", { credentials: "same-origin" });
  if (res.status === 401) { location.href = "/login"; return; }
  const state = await res.json();
  const list = clear(document.getElementById("rules"));
  for (const rule of state.rules) list.append(ruleRow(rule));
  document.getElementById("raw-script").value = state.raw;
  filtersBase = state.base;
  document.getElementById("add-rule").addEventListener("click", () =>
    list.append(ruleRow({ field: "from", contains: "", action: "move", folder: "", address: "", keepCopy: true })));
  document.getElementById("save-filters").addEventListener("click", () =>
    saveFilters().catch((e) => toast(String(e), true)));
  const jmap = new JMAPClient(csrfToken);
  await jmap.connect();
  await loadVacation(jmap);
  document.getElementById("vacation-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    saveVacation(jmap).catch((e) => toast(String(e), true));
  });
  document.body.dataset.ready = "true";
}

window.addEventListener("DOMContentLoaded", () => start().catch((e) => toast(String(e), true)));

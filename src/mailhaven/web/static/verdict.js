// What the inbound checks said about a message, for the reader: our own
// Authentication-Results (RFC 8601; only the one whose authserv-id is this server's, which
// the server puts on top and never lets a sender forge) and our X-Spam-Status.

import { el } from "./dom.js";

export const VERDICT_PROPERTIES = ["header:Authentication-Results:asText:all", "header:X-Spam-Status:asText"];

// "mail.example; spf=pass smtp.mailfrom=a@b; dkim=pass header.d=b ..." -> {method: {result, props}}
export function parseAuthResults(value, authservId) {
  const text = String(value || "").replace(/\([^)]*\)/g, " ").replace(/\s+/g, " ").trim();
  const [id, ...rest] = text.split(";");
  if (!authservId || id.trim().split(" ")[0].toLowerCase() !== authservId.toLowerCase()) return null;
  const methods = {};
  for (const part of rest) {
    const words = part.trim().split(" ");
    const m = /^([a-z0-9-]+)=([a-z]+)$/i.exec(words[0] || "");
    if (!m) continue;
    const props = {};
    for (const w of words.slice(1)) {
      const kv = /^([a-z0-9.-]+)=(.+)$/i.exec(w);
      if (kv) props[kv[1].toLowerCase()] = kv[2];
    }
    const key = m[1].toLowerCase();
    (methods[key] = methods[key] || []).push({ result: m[2].toLowerCase(), props });
  }
  return methods;
}

function domainOf(address) { return String(address || "").split("@").pop().toLowerCase(); }

// The verdict banner of one message, or null when the server did not check it.
export function verdictBanner(email, authservId) {
  const all = email["header:Authentication-Results:asText:all"] || [];
  const ours = all.length ? parseAuthResults(all[0], authservId) : null;
  if (!ours) return null;
  const dmarc = (ours.dmarc || [])[0];
  const dkim = (ours.dkim || []).filter((d) => d.result === "pass");
  const spf = (ours.spf || [])[0];
  const status = String(email["header:X-Spam-Status:asText"] || "");
  const spam = /^yes\b/i.test(status.trim());
  const score = (/score=(-?[0-9.]+)/.exec(status) || [])[1];
  const lines = [];
  let level = "ok";
  if (dmarc && dmarc.result === "fail") {
    level = "danger";
    lines.push(`Warning: this message failed DMARC. It may not really come from ${dmarc.props["header.from"] || "the sender's domain"}.`);
  } else if (dmarc && dmarc.result === "pass") {
    lines.push(`Sender verified: ${dmarc.props["header.from"]}`);
  } else if (dkim.length) {
    lines.push(`Signed by ${dkim.map((d) => d.props["header.d"]).join(", ")}`);
  } else if (spf && spf.result === "pass") {
    lines.push(`Sent from a server allowed by ${domainOf(spf.props["smtp.mailfrom"] || spf.props["smtp.helo"])}`);
  } else {
    level = "warn";
    lines.push("The sender could not be verified.");
  }
  if (spam) {
    if (level === "ok") level = "warn";
    lines.push(`Looks like spam${score ? ` (score ${score})` : ""}.`);
  }
  return el("div", { class: `verdict ${level}`, role: level === "danger" ? "alert" : "note" },
    lines.map((l) => el("div", {}, l)));
}

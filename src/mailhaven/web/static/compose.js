// Compose, reply, reply-all and forward; attachments uploaded as they are picked; drafts
// saved as you type (Email/set in the Drafts mailbox, debounced); sending with
// EmailSubmission/set (RFC 8621 §7), which files the message in Sent on success.

import { el, clear, toast, formatFullDate, formatSize } from "./dom.js";
import { parseAddressList, formatAddressList } from "./jmap.js";

const DRAFT_DELAY_MS = 1500;

function plainTextOf(email) {
  const values = email.bodyValues || {};
  const parts = (email.textBody || []).map((p) => {
    const v = (values[p.partId] || {}).value || "";
    if (p.type === "text/html") {
      // DOMParser documents are inert: no script runs and no resource is fetched.
      return new DOMParser().parseFromString(v, "text/html").body.textContent || "";
    }
    return v;
  });
  return parts.join("\n").trim() || email.preview || "";
}

function prefixed(prefix, subject) {
  const s = subject || "";
  return new RegExp(`^${prefix}:`, "i").test(s.trim()) ? s : `${prefix}: ${s}`;
}

export class Composer {
  constructor(app) {
    this.app = app;
    this.identities = null;
    this.reset();
  }

  reset() {
    this.draftId = null;
    this.attachments = [];
    this.inReplyTo = null;
    this.references = null;
    this.timer = null;
    this.saving = Promise.resolve();
    this.dirty = false;
    this.sent = false;
  }

  get pane() { return document.getElementById("compose-pane"); }

  async loadIdentities() {
    if (this.identities) return this.identities;
    try {
      const res = await this.app.jmap.call("Identity/get", { ids: null });
      this.identities = res.list;
    } catch (e) {
      console.warn("Identity/get", e);
      this.identities = [];
    }
    if (!this.identities.length) {
      this.identities = [{ id: null, name: "", email: this.app.jmap.username }];
    }
    return this.identities;
  }

  async openNew(fields = {}) {
    if (!this.pane.hidden && this.dirty) await this.flush();
    this.reset();
    await this.loadIdentities();
    Object.assign(this, { inReplyTo: fields.inReplyTo || null, references: fields.references || null });
    this.attachments = fields.attachments || [];
    this.draftId = fields.draftId || null;
    this.render(fields);
    this.app.setView("compose");
    const focus = fields.to ? this.form.elements.body : this.form.elements.to;
    focus.focus();
    if (fields.to && focus.setSelectionRange) focus.setSelectionRange(0, 0);
  }

  async openReply(email, mode) {
    const me = new Set(this.identitiesEmails());
    const fields = { attachments: [] };
    const quoteHead = `On ${formatFullDate(email.sentAt || email.receivedAt)}, ${formatAddressList(email.from)} wrote:`;
    const text = plainTextOf(email);
    if (mode === "forward") {
      fields.subject = prefixed("Fwd", email.subject);
      fields.body = "\n\n---------- Forwarded message ----------\n"
        + `From: ${formatAddressList(email.from)}\nDate: ${formatFullDate(email.sentAt || email.receivedAt)}\n`
        + `Subject: ${email.subject || ""}\nTo: ${formatAddressList(email.to)}\n\n${text}\n`;
      fields.attachments = (email.attachments || []).map((a) => ({
        blobId: a.blobId, type: a.type, name: a.name, size: a.size }));
    } else {
      const replyTo = email.replyTo?.length ? email.replyTo : email.from || [];
      let to = replyTo;
      let cc = [];
      if (mode === "all") {
        const seen = new Set();
        const keep = (a) => {
          const key = (a.email || "").toLowerCase();
          if (!key || me.has(key) || seen.has(key)) return false;
          seen.add(key);
          return true;
        };
        to = [...replyTo, ...(email.to || [])].filter(keep);
        cc = (email.cc || []).filter(keep);
        if (!to.length) to = replyTo;
      }
      fields.to = formatAddressList(to);
      fields.cc = formatAddressList(cc);
      fields.subject = prefixed("Re", email.subject);
      fields.body = "\n\n" + quoteHead + "\n" + text.split("\n").map((l) => "> " + l).join("\n") + "\n";
      const msgId = email.messageId || [];
      fields.inReplyTo = msgId.length ? msgId : null;
      fields.references = [...(email.references || email.inReplyTo || []), ...msgId];
    }
    await this.openNew(fields);
  }

  async openDraft(id) {
    const res = await this.app.jmap.call("Email/get", {
      ids: [id], fetchTextBodyValues: true,
      properties: ["id", "from", "to", "cc", "bcc", "subject", "textBody", "bodyValues",
                   "attachments", "inReplyTo", "references"] });
    const d = res.list[0];
    if (!d) return;
    await this.openNew({
      draftId: d.id, to: formatAddressList(d.to), cc: formatAddressList(d.cc),
      bcc: formatAddressList(d.bcc), subject: d.subject || "", body: plainTextOf(d),
      inReplyTo: d.inReplyTo, references: d.references,
      attachments: (d.attachments || []).map((a) => ({ blobId: a.blobId, type: a.type, name: a.name, size: a.size })),
    });
  }

  identitiesEmails() {
    return [...(this.identities || []).map((i) => (i.email || "").toLowerCase()),
            (this.app.jmap.username || "").toLowerCase()];
  }

  render(fields) {
    const pane = clear(this.pane);
    const field = (name, label, value, attrs = {}) =>
      el("label", { class: "field field-" + name }, el("span", {}, label),
        el("input", { name, value: value || "", autocomplete: "off", ...attrs }));
    const from = el("select", { name: "from" }, this.identities.map((i, n) =>
      el("option", { value: String(n) }, i.name ? `${i.name} <${i.email}>` : i.email)));
    const files = el("input", { type: "file", name: "files", multiple: true, class: "file-input" });
    this.form = el("form", { class: "compose-form", autocomplete: "off" },
      el("div", { class: "compose-head" },
        el("h2", {}, fields.subject ? fields.subject : "New message"),
        el("span", { class: "draft-status", "aria-live": "polite" }, "")),
      el("label", { class: "field" }, el("span", {}, "From"), from),
      field("to", "To", fields.to, { type: "text", placeholder: "name@example.org, …" }),
      field("cc", "Cc", fields.cc, { type: "text" }),
      field("bcc", "Bcc", fields.bcc, { type: "text" }),
      field("subject", "Subject", fields.subject, { type: "text" }),
      el("textarea", { name: "body", rows: "14", "aria-label": "Message" }, fields.body || ""),
      el("ul", { class: "compose-attachments" }),
      el("div", { class: "compose-actions" },
        el("button", { type: "submit", class: "primary send" }, "Send"),
        el("label", { class: "button attach" }, "Attach…", files),
        el("button", { type: "button", class: "quiet discard" }, "Discard")));
    pane.append(this.form);
    this.renderAttachments();
    this.form.addEventListener("input", (ev) => { if (ev.target !== files) this.changed(); });
    files.addEventListener("change", () => this.addFiles(files));
    this.form.addEventListener("submit", (ev) => { ev.preventDefault(); this.send(); });
    this.form.querySelector(".discard").addEventListener("click", () => this.discard());
    this.form.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); this.send(); }
      if (ev.key === "Escape") { ev.preventDefault(); this.close(); }
    });
  }

  renderAttachments() {
    const list = clear(this.form.querySelector(".compose-attachments"));
    this.attachments.forEach((a, i) => {
      const remove = el("button", { type: "button", class: "icon remove", "aria-label": `Remove ${a.name}` }, "×");
      remove.addEventListener("click", () => { this.attachments.splice(i, 1); this.renderAttachments(); this.changed(); });
      list.append(el("li", { class: a.uploading ? "uploading" : "" }, el("span", { class: "clip" }), a.name || "(unnamed)",
        el("span", { class: "size" }, ` ${formatSize(a.size || 0)}`), a.uploading ? " (uploading…)" : "", remove));
    });
  }

  async addFiles(input) {
    const picked = [...input.files];
    input.value = "";
    await Promise.all(picked.map(async (file) => {
      const entry = { name: file.name, type: file.type || "application/octet-stream", size: file.size, uploading: true };
      this.attachments.push(entry);
      this.renderAttachments();
      try {
        const up = await this.app.jmap.upload(file);
        Object.assign(entry, { blobId: up.blobId, size: up.size, uploading: false });
      } catch (e) {
        this.attachments.splice(this.attachments.indexOf(entry), 1);
        toast(`Upload of ${file.name} failed: ${e.message}`, true);
      }
      this.renderAttachments();
    }));
    this.changed();
  }

  status(text) {
    const s = this.form && this.form.querySelector(".draft-status");
    if (s) s.textContent = text;
  }

  changed() {
    this.dirty = true;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.saveDraft(), DRAFT_DELAY_MS);
  }

  identity() {
    return this.identities[Number(this.form.elements.from.value) || 0];
  }

  // The Email object for what is in the form (RFC 8621 §4.6 creation).
  emailObject(mailboxId, keywords) {
    const f = this.form.elements;
    const id = this.identity();
    const email = {
      mailboxIds: { [mailboxId]: true },
      keywords,
      from: [{ name: id.name || null, email: id.email }],
      subject: f.subject.value,
      bodyValues: { body: { value: f.body.value } },
      textBody: [{ partId: "body", type: "text/plain" }],
    };
    for (const name of ["to", "cc", "bcc"]) {
      const list = parseAddressList(f[name].value);
      if (list.length) email[name] = list;
    }
    if (this.inReplyTo) email.inReplyTo = this.inReplyTo;
    if (this.references && this.references.length) email.references = this.references;
    const ready = this.attachments.filter((a) => a.blobId);
    if (ready.length) {
      email.attachments = ready.map((a) => ({ blobId: a.blobId, type: a.type, name: a.name, disposition: "attachment" }));
    }
    return email;
  }

  // Emails are immutable in JMAP: each save creates a new draft and destroys the last one.
  // The form is read now; the request waits for any save still in flight.
  saveDraft() {
    clearTimeout(this.timer);
    const drafts = this.app.mailboxByRole("drafts");
    if (!this.dirty || this.sent || !this.form || !drafts) return this.saving;
    this.dirty = false;
    const email = this.emailObject(drafts.id, { $draft: true, $seen: true });
    this.status("Saving…");
    this.saving = this.saving.then(async () => {
      if (this.sent) return;
      try {
        const res = await this.app.jmap.call("Email/set", {
          create: { draft: email }, destroy: this.draftId ? [this.draftId] : [] });
        if (res.created && res.created.draft) {
          this.draftId = res.created.draft.id;
          this.status("Draft saved");
        } else {
          this.status("Draft not saved");
          console.warn("draft", res.notCreated);
        }
      } catch (e) {
        this.status("Draft not saved");
        console.warn(e);
      }
    });
    return this.saving;
  }

  async flush() {
    clearTimeout(this.timer);
    if (this.dirty) await this.saveDraft();
    await this.saving;
  }

  async send() {
    if (this.sending) return;
    const f = this.form.elements;
    const recipients = ["to", "cc", "bcc"].flatMap((n) => parseAddressList(f[n].value));
    if (!recipients.length) { toast("Add at least one recipient", true); f.to.focus(); return; }
    if (this.attachments.some((a) => a.uploading)) { toast("Wait for the attachments to upload", true); return; }
    this.sending = true;
    clearTimeout(this.timer);
    try {
      await this.saving;
      const drafts = this.app.mailboxByRole("drafts");
      const sent = this.app.mailboxByRole("sent");
      const home = drafts || sent || this.app.mailboxByRole("inbox");
      const id = this.identity();
      const submission = { emailId: "#final" };
      if (id.id) submission.identityId = id.id;
      const onSuccess = sent
        ? { onSuccessUpdateEmail: { "#send": { mailboxIds: { [sent.id]: true }, "keywords/$draft": null } } }
        : { onSuccessDestroyEmail: ["#send"] };
      const jmap = this.app.jmap;
      const res = await jmap.request([
        ["Email/set", { accountId: jmap.accountId,
                        create: { final: this.emailObject(home.id, { $draft: true, $seen: true }) },
                        destroy: this.draftId ? [this.draftId] : [] }, "e"],
        ["EmailSubmission/set", { accountId: jmap.accountId, create: { send: submission }, ...onSuccess }, "s"],
      ]);
      if (!res.e.created || !res.e.created.final) {
        const why = Object.values(res.e.notCreated || {})[0] || {};
        throw new Error(why.description || why.type || "the message could not be created");
      }
      if (!res.s.created || !res.s.created.send) {
        const why = Object.values(res.s.notCreated || {})[0] || {};
        this.draftId = res.e.created.final.id;
        throw new Error(why.description || why.type || "the message could not be sent");
      }
      this.sent = true;
      this.dirty = false;
      toast("Message sent");
      this.close(false);
      await this.app.refresh();
    } catch (e) {
      toast("Not sent: " + e.message, true);
    } finally {
      this.sending = false;
    }
  }

  async discard() {
    clearTimeout(this.timer);
    this.sent = true;  // stops any further draft save
    await this.saving;
    if (this.draftId) {
      await this.app.jmap.call("Email/set", { destroy: [this.draftId] }).catch((e) => console.warn(e));
    }
    toast("Draft discarded");
    this.close(false);
    this.app.refresh().catch(() => {});
  }

  close(save = true) {
    if (save && this.dirty && !this.sent) this.saveDraft().then(() => this.app.refresh().catch(() => {}));
    clear(this.pane);
    this.form = null;
    this.app.setView(this.app.reader.current ? "message" : "list");
  }
}

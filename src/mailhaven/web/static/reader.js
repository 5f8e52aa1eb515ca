// Reading a thread: headers, the sanitised HTML body in a sandboxed frame (or the plain
// text), attachments, and the actions on the open message.

import { el, clear, toast, formatFullDate, formatSize } from "./dom.js";
import { formatAddressList } from "./jmap.js";
import { linkifiedText } from "./dom.js";
import { VERDICT_PROPERTIES, verdictBanner } from "./verdict.js";

const FULL_PROPERTIES = ["id", "threadId", "mailboxIds", "keywords", "from", "to", "cc", "bcc",
  "replyTo", "subject", "sentAt", "receivedAt", "messageId", "inReplyTo", "references",
  "textBody", "htmlBody", "attachments", "bodyValues", "preview", "hasAttachment", "size",
  ...VERDICT_PROPERTIES];
const MAX_INLINE_IMAGE = 1024 * 1024;
// No allow-scripts, no allow-same-origin: the message document has an opaque origin and
// cannot run code; popups are allowed so its links open in a normal new tab.
const FRAME_SANDBOX = "allow-popups allow-popups-to-escape-sandbox";

export class Reader {
  constructor(app) {
    this.app = app;
    this.current = null;
    this.thread = [];
  }

  get pane() { return document.getElementById("reader-pane"); }

  close() {
    this.current = null;
    this.thread = [];
    clear(this.pane).append(el("p", { class: "empty" }, "No message selected."));
  }

  async open(summary) {
    this.opened = (this.opened || 0) + 1;
    const jmap = this.app.jmap;
    const res = await jmap.request([
      ["Thread/get", { accountId: jmap.accountId, ids: [summary.threadId] }, "t"],
      ["Email/get", { accountId: jmap.accountId, properties: FULL_PROPERTIES,
                      fetchHTMLBodyValues: true, fetchTextBodyValues: true,
                      maxBodyValueBytes: 2 * 1024 * 1024,
                      "#ids": { resultOf: "t", name: "Thread/get", path: "/list/*/emailIds" } }, "g"],
    ]);
    let emails = res.g.list;
    if (!emails.length) emails = [summary];
    const trashOrJunk = new Set(["trash", "junk"].map((r) => this.app.mailboxByRole(r)?.id).filter(Boolean));
    const here = this.app.mailboxId;
    // Hide copies in Trash/Junk unless that is where we are reading.
    const visible = emails.filter((e) => !Object.keys(e.mailboxIds || {}).some((id) => trashOrJunk.has(id) && id !== here)
      || e.id === summary.id);
    visible.sort((a, b) => (a.receivedAt || "").localeCompare(b.receivedAt || ""));
    this.thread = visible;
    // The newest message of the thread is the one replies and flags act on.
    this.current = visible[visible.length - 1];
    this.render();
    const unseen = visible.filter((e) => !(e.keywords || {}).$seen).map((e) => e.id);
    if (unseen.length) {
      const update = {};
      for (const id of unseen) update[id] = { "keywords/$seen": true };
      await jmap.call("Email/set", { update });
      for (const e of visible) e.keywords = { ...(e.keywords || {}), $seen: true };
      this.app.refresh().catch((e) => console.warn(e));
    }
  }

  render() {
    const pane = clear(this.pane);
    const first = this.thread[0] || this.current;
    pane.append(this.toolbar(), el("h1", { class: "thread-subject" }, first.subject || "(no subject)"));
    for (const email of this.thread) {
      const expanded = email === this.current || !(email.keywords || {}).$seen || this.thread.length === 1;
      pane.append(this.card(email, expanded));
    }
    pane.scrollTop = 0;
  }

  toolbar() {
    const e = this.current;
    const kw = e.keywords || {};
    const button = (label, title, cls = "") =>
      el("button", { type: "button", title, class: cls, "data-action": label.toLowerCase().replace(/\s+/g, "-") }, label);
    const bar = el("div", { class: "toolbar" },
      button("Back", "Back to the list (u)", "mobile-only"),
      button("Reply", "Reply (r)"), button("Reply all", "Reply all (a)"), button("Forward", "Forward (f)"),
      button(kw.$flagged ? "Unflag" : "Flag", "Flag (s)"),
      button("Mark unread", "Mark unread"),
      this.moveSelect(),
      this.app.mailboxById(this.app.mailboxId)?.role === "junk"
        ? button("Not junk", "Not junk: back to the Inbox") : button("Junk", "Mark as junk"),
      button("Delete", "Delete (#)", "danger"));
    bar.addEventListener("click", (ev) => {
      const b = ev.target.closest("button");
      if (b) this.act(b.dataset.action).catch((err) => toast(err.message, true));
    });
    return bar;
  }

  moveSelect() {
    const select = el("select", { "aria-label": "Move to", class: "move-to", title: "Move to folder" },
      el("option", { value: "" }, "Move to…"),
      this.app.sortedMailboxes().map(([m, depth]) =>
        el("option", { value: m.id, disabled: !!(this.current.mailboxIds || {})[m.id] },
          "\u00a0".repeat(depth * 2) + this.app.displayName(m))));
    select.addEventListener("change", async () => {
      if (!select.value) return;
      const target = this.app.mailboxById(select.value);
      await this.app.moveTo(this.actionIds(), select.value);
      toast(`Moved to ${target ? this.app.displayName(target) : "folder"}`);
      this.app.back();
    });
    return select;
  }

  // Move/delete/junk act on the thread's messages in the folder we are looking at.
  actionIds() {
    const here = this.app.mailboxId;
    if (this.app.searchText) return [this.current.id];
    const ids = this.thread.filter((e) => (e.mailboxIds || {})[here]).map((e) => e.id);
    return ids.length ? ids : [this.current.id];
  }

  async act(action) {
    const e = this.current;
    const composer = this.app.composer;
    // Back to the list once the action is done, unless another message was opened meanwhile.
    const opened = this.opened;
    const back = () => { if (this.opened === opened) this.app.back(); };
    switch (action) {
      case "back": this.app.back(); break;
      case "reply": composer.openReply(e, "reply"); break;
      case "reply-all": composer.openReply(e, "all"); break;
      case "forward": composer.openReply(e, "forward"); break;
      case "flag": case "unflag":
        await this.app.setKeyword([e.id], "$flagged", action === "flag");
        e.keywords = { ...(e.keywords || {}), $flagged: action === "flag" };
        this.render();
        break;
      case "mark-unread":
        await this.app.setKeyword([e.id], "$seen", false);
        back();
        break;
      case "junk": await this.app.junkEmails(this.actionIds()); back(); break;
      case "not-junk": await this.app.notJunkEmails(this.actionIds()); back(); break;
      case "delete": await this.app.deleteEmails(this.actionIds()); back(); break;
      default: break;
    }
  }

  card(email, expanded) {
    const from = formatAddressList(email.from);
    const head = el("header", { class: "card-head" },
      el("div", { class: "card-from" }, from || "(unknown sender)"),
      el("time", { class: "card-date", datetime: email.receivedAt }, formatFullDate(email.sentAt || email.receivedAt)));
    const card = el("article", { class: "message-card" + (expanded ? " expanded" : ""), "data-id": email.id }, head);
    const details = el("div", { class: "card-details" },
      email.to?.length ? el("div", {}, el("span", { class: "label" }, "To: "), formatAddressList(email.to)) : null,
      email.cc?.length ? el("div", {}, el("span", { class: "label" }, "Cc: "), formatAddressList(email.cc)) : null);
    const body = el("div", { class: "card-body" });
    const authserv = document.querySelector('meta[name="authserv-id"]')?.content;
    card.append(...[details, verdictBanner(email, authserv), body].filter(Boolean));
    if (!expanded) card.append(el("div", { class: "card-preview" }, email.preview || ""));
    head.addEventListener("click", () => {
      this.current = email;
      if (!card.classList.contains("expanded")) {
        card.classList.add("expanded");
        card.querySelector(".card-preview")?.remove();
        this.renderBody(email, body).catch((err) => toast(err.message, true));
      }
    });
    if (expanded) this.renderBody(email, body).catch((err) => toast(err.message, true));
    return card;
  }

  async renderBody(email, container, allowRemote = false) {
    clear(container);
    const values = email.bodyValues || {};
    const htmlParts = (email.htmlBody || []).filter((p) => p.type === "text/html" && values[p.partId]);
    const usedCids = new Set();
    if (htmlParts.length) {
      const html = (email.htmlBody || []).map((p) => {
        const v = values[p.partId];
        if (!v) return "";
        if (p.type === "text/html") return v.value;
        if (p.type && p.type.startsWith("text/")) {
          const div = document.createElement("div");
          div.textContent = v.value;
          return "<pre>" + div.innerHTML + "</pre>";
        }
        return "";
      }).join("\n");
      for (const m of html.matchAll(/cid:([^"'\s)>]+)/gi)) usedCids.add(m[1]);
      const cids = await this.inlineImages(email, usedCids);
      const res = await fetch("/sanitize", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": this.app.jmap.csrfToken },
        body: JSON.stringify({ html, cids, allowRemote }),
      });
      if (!res.ok) throw new Error(`sanitize: HTTP ${res.status}`);
      const { url, remoteImages } = await res.json();
      if (remoteImages > 0 && !allowRemote) {
        const show = el("button", { type: "button", class: "link" }, "Show remote images");
        show.addEventListener("click", () => this.renderBody(email, container, true));
        container.append(el("div", { class: "remote-banner" },
          `${remoteImages} remote image${remoteImages > 1 ? "s" : ""} blocked to protect your privacy. `, show));
      }
      container.append(el("iframe", { class: "message-frame", src: url, sandbox: FRAME_SANDBOX,
                                       referrerpolicy: "no-referrer", title: "Message body",
                                       loading: "lazy" }));
    } else {
      const text = (email.textBody || []).map((p) => (values[p.partId] || {}).value || "").join("\n");
      container.append(el("div", { class: "text-body" }, linkifiedText(text || email.preview || "")));
    }
    const attachments = (email.attachments || []).filter((a) => !(a.cid && usedCids.has(a.cid)));
    if (attachments.length) {
      container.append(el("ul", { class: "attachments" }, attachments.map((a) =>
        el("li", {}, el("a", { href: this.app.jmap.downloadUrl(a.blobId, a.name, a.type),
                               download: a.name || "attachment", class: "attachment" },
          el("span", { class: "clip" }), a.name || "(unnamed)", el("span", { class: "size" }, ` ${formatSize(a.size || 0)}`))))));
    }
  }

  // Inline cid: images are fetched here (with the session) and handed to the sanitiser
  // as data: URLs, so the sandboxed frame needs no network access at all.
  async inlineImages(email, usedCids) {
    const parts = [...(email.attachments || []), ...(email.htmlBody || [])]
      .filter((p) => p.cid && usedCids.has(p.cid) && (p.type || "").startsWith("image/")
              && (p.size || 0) <= MAX_INLINE_IMAGE);
    const out = {};
    for (const p of parts) {
      if (out[p.cid]) continue;
      try {
        const res = await fetch(this.app.jmap.downloadUrl(p.blobId, p.name, p.type), { credentials: "same-origin" });
        if (!res.ok) continue;
        const blob = await res.blob();
        out[p.cid] = await new Promise((resolve, reject) => {
          const reader = new FileReader();
          reader.onload = () => resolve(String(reader.result).replace(/^data:[^;,]*/, "data:" + p.type));
          reader.onerror = reject;
          reader.readAsDataURL(blob);
        });
      } catch (e) { console.warn("inline image", e); }
    }
    return out;
  }
}

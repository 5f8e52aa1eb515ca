// Mailhaven webmail: folders, the message list, live updates and keyboard shortcuts.
// Everything goes through JMAP (jmap.js); the reader and composer live in their own modules.

import { JMAPClient, JMAPError } from "./jmap.js";
import { Reader } from "./reader.js";
import { Composer } from "./compose.js";
import { el, clear, toast, formatDate, addressName } from "./dom.js";

const PAGE_SIZE = 50;
const ROLE_ORDER = ["inbox", "drafts", "sent", "archive", "junk", "trash"];
const LIST_PROPERTIES = ["id", "threadId", "mailboxIds", "keywords", "from", "to", "subject",
                         "receivedAt", "preview", "hasAttachment", "size"];

class App {
  constructor() {
    const csrf = document.querySelector('meta[name="csrf-token"]').content;
    this.jmap = new JMAPClient(csrf);
    this.mailboxes = [];
    this.mailboxId = null;
    this.searchText = "";
    this.position = 0;
    this.total = 0;
    this.emails = [];
    this.threadSizes = {};
    this.selected = -1;
    this.reader = new Reader(this);
    this.composer = new Composer(this);
    this.refreshTimer = null;
  }

  async start() {
    try {
      await this.jmap.connect();
    } catch (e) {
      if (e instanceof JMAPError && e.type === "unauthorized") { location.href = "/login"; return; }
      toast("Cannot reach the server: " + e.message, true);
      return;
    }
    document.getElementById("whoami").textContent = this.jmap.username;
    this.bindChrome();
    await this.loadMailboxes();
    const inbox = this.mailboxByRole("inbox") || this.mailboxes[0];
    if (inbox) await this.openMailbox(inbox.id);
    this.jmap.listen((change) => this.onPush(change), (connected) => this.onConnection(connected));
  }

  // The push stream is the webmail's line to the server: when it drops, say so until it is
  // back, then catch up on whatever changed meanwhile.
  onConnection(connected) {
    if (connected === "unauthorized") { location.href = "/login"; return; }
    const banner = document.getElementById("connection-lost");
    const wasLost = !banner.hidden;
    banner.hidden = connected;
    document.body.classList.toggle("offline", !connected);
    if (connected && wasLost) this.refresh().catch((e) => console.warn(e));
  }

  // -- mailboxes ------------------------------------------------------------------------
  mailboxByRole(role) { return this.mailboxes.find((m) => m.role === role); }

  mailboxById(id) { return this.mailboxes.find((m) => m.id === id); }

  // IMAP's INBOX is spelt in capitals by the protocol (RFC 3501 §5.1); people read "Inbox".
  displayName(m) {
    if (!m) return "";
    return m.role === "inbox" && m.name.toUpperCase() === "INBOX" ? "Inbox" : m.name;
  }

  async loadMailboxes() {
    const res = await this.jmap.call("Mailbox/get", {
      ids: null,
      properties: ["id", "name", "parentId", "role", "sortOrder", "totalEmails", "unreadEmails",
                   "totalThreads", "unreadThreads"],
    });
    this.mailboxes = res.list;
    this.renderMailboxes();
  }

  sortedMailboxes() {
    const children = new Map();
    for (const m of this.mailboxes) {
      const key = m.parentId || "";
      if (!children.has(key)) children.set(key, []);
      children.get(key).push(m);
    }
    const rank = (m) => (m.role && ROLE_ORDER.includes(m.role) ? ROLE_ORDER.indexOf(m.role) : 100);
    const out = [];
    const walk = (parent, depth) => {
      const kids = (children.get(parent) || []).sort(
        (a, b) => rank(a) - rank(b) || (a.sortOrder || 0) - (b.sortOrder || 0) || a.name.localeCompare(b.name));
      for (const m of kids) { out.push([m, depth]); walk(m.id, depth + 1); }
    };
    walk("", 0);
    return out;
  }

  renderMailboxes() {
    const list = clear(document.getElementById("mailboxes"));
    for (const [m, depth] of this.sortedMailboxes()) {
      const unread = m.unreadEmails || 0;
      const item = el("li", { class: "mailbox" + (m.id === this.mailboxId && !this.searchText ? " current" : ""),
                              "data-id": m.id, "data-role": m.role || "" },
        el("a", { href: "#", style: `padding-left:${0.75 + depth}rem` },
          el("span", { class: "name" }, this.displayName(m)),
          unread ? el("span", { class: "unread-count", title: `${unread} unread` }, String(unread)) : null));
      item.querySelector("a").addEventListener("click", (ev) => {
        ev.preventDefault();
        document.getElementById("search").value = "";
        this.openMailbox(m.id);
      });
      list.append(item);
    }
    document.title = this.titleText();
  }

  titleText() {
    const inbox = this.mailboxByRole("inbox");
    const unread = inbox ? inbox.unreadEmails : 0;
    return (unread ? `(${unread}) ` : "") + "Mailhaven";
  }

  async openMailbox(id) {
    this.mailboxId = id;
    this.searchText = "";
    this.position = 0;
    this.selected = -1;
    this.reader.close();          // the open message belongs to the folder we leave
    this.setView("list");
    this.renderMailboxes();
    await this.loadList();
  }

  async search(text) {
    this.searchText = text.trim();
    if (!this.searchText) { this.openMailbox(this.mailboxId); return; }
    this.position = 0;
    this.selected = -1;
    this.reader.close();
    this.setView("list");
    this.renderMailboxes();
    await this.loadList();
  }

  // -- the message list -----------------------------------------------------------------
  listFilter() {
    if (this.searchText) return { text: this.searchText };
    return { inMailbox: this.mailboxId };
  }

  async loadList({ keepSelection = false } = {}) {
    const selectedId = keepSelection && this.emails[this.selected] ? this.emails[this.selected].id : null;
    const res = await this.jmap.request([
      ["Email/query", { accountId: this.jmap.accountId, filter: this.listFilter(),
                        sort: [{ property: "receivedAt", isAscending: false }],
                        collapseThreads: true, position: this.position, limit: PAGE_SIZE,
                        calculateTotal: true }, "q"],
      ["Email/get", { accountId: this.jmap.accountId, properties: LIST_PROPERTIES,
                      "#ids": { resultOf: "q", name: "Email/query", path: "/ids" } }, "g"],
      ["Thread/get", { accountId: this.jmap.accountId,
                       "#ids": { resultOf: "g", name: "Email/get", path: "/list/*/threadId" } }, "t"],
    ]);
    const byId = new Map(res.g.list.map((e) => [e.id, e]));
    this.emails = res.q.ids.map((id) => byId.get(id)).filter(Boolean);
    this.total = res.q.total ?? this.emails.length;
    this.threadSizes = {};
    for (const t of res.t.list) this.threadSizes[t.id] = t.emailIds.length;
    if (selectedId) this.selected = this.emails.findIndex((e) => e.id === selectedId);
    this.renderList();
  }

  renderList() {
    const title = this.searchText ? `Search: ${this.searchText}`
      : this.displayName(this.mailboxById(this.mailboxId));
    document.getElementById("list-title").textContent = title;
    const end = Math.min(this.position + this.emails.length, this.total);
    document.getElementById("list-range").textContent =
      this.total ? `${this.position + 1}–${end} of ${this.total}` : "";
    document.getElementById("newer").disabled = this.position === 0;
    document.getElementById("older").disabled = end >= this.total;
    const list = clear(document.getElementById("message-list"));
    if (!this.emails.length) {
      list.append(el("li", { class: "empty" }, this.searchText ? "No messages match." : "No messages."));
      return;
    }
    const showRecipients = ["sent", "drafts"].includes((this.mailboxById(this.mailboxId) || {}).role)
      && !this.searchText;
    this.emails.forEach((e, i) => {
      const kw = e.keywords || {};
      const count = this.threadSizes[e.threadId] || 1;
      const who = showRecipients ? "To: " + (e.to || []).map(addressName).join(", ")
        : (e.from || []).map(addressName).join(", ");
      const row = el("li", {
          class: "message" + (kw.$seen ? "" : " unread") + (kw.$flagged ? " flagged" : "")
            + (i === this.selected ? " selected" : ""),
          "data-id": e.id, "data-index": String(i), tabindex: "-1" },
        el("button", { class: "flag-toggle", type: "button", title: kw.$flagged ? "Unflag" : "Flag",
                       "aria-label": kw.$flagged ? "Unflag" : "Flag" }, kw.$flagged ? "★" : "☆"),
        el("span", { class: "from" }, who || "(nobody)",
          count > 1 ? el("span", { class: "thread-count" }, String(count)) : null),
        el("span", { class: "subject" }, e.subject || "(no subject)"),
        el("span", { class: "preview" }, e.preview || ""),
        e.hasAttachment ? el("span", { class: "attachment-mark clip", title: "Has attachments", "aria-label": "Has attachments" }) : null,
        el("time", { class: "date", datetime: e.receivedAt }, formatDate(e.receivedAt)));
      row.addEventListener("click", (ev) => {
        if (ev.target.closest(".flag-toggle")) {
          this.setKeyword([e.id], "$flagged", !kw.$flagged);
          return;
        }
        this.select(i);
        this.openSelected();
      });
      list.append(row);
    });
  }

  select(i) {
    if (i < 0 || i >= this.emails.length) return;
    this.selected = i;
    for (const row of document.querySelectorAll("#message-list li.message")) {
      row.classList.toggle("selected", row.dataset.index === String(i));
    }
    const row = document.querySelector(`#message-list li.message[data-index="${i}"]`);
    if (row) row.scrollIntoView({ block: "nearest" });
  }

  async openSelected() {
    const e = this.emails[this.selected];
    if (!e) return;
    if ((e.keywords || {}).$draft && this.mailboxById(this.mailboxId)?.role === "drafts") {
      await this.composer.openDraft(e.id);
      return;
    }
    this.setView("message");
    await this.reader.open(e);
  }

  async page(delta) {
    const next = this.position + delta * PAGE_SIZE;
    if (next < 0 || (delta > 0 && next >= this.total)) return;
    this.position = next;
    this.selected = -1;
    await this.loadList();
  }

  // -- actions shared by the list and the reader --------------------------------------
  async setKeyword(ids, keyword, on) {
    const update = {};
    for (const id of ids) update[id] = { [`keywords/${keyword}`]: on ? true : null };
    await this.jmap.call("Email/set", { update });
    await this.refresh();
  }

  async moveTo(ids, mailboxId, extra = {}) {
    const update = {};
    for (const id of ids) update[id] = { mailboxIds: { [mailboxId]: true }, ...extra };
    const res = await this.jmap.call("Email/set", { update });
    const failed = Object.keys(res.notUpdated || {});
    if (failed.length) toast(`Could not move ${failed.length} message(s)`, true);
    await this.refresh();
  }

  async destroy(ids) {
    const res = await this.jmap.call("Email/set", { destroy: ids });
    if ((res.notDestroyed && Object.keys(res.notDestroyed).length)) toast("Could not delete", true);
    await this.refresh();
  }

  // Delete: to Trash, or for good when already there (RFC 8621 §1.6 roles).
  async deleteEmails(ids) {
    const trash = this.mailboxByRole("trash");
    if (!trash || this.mailboxId === trash.id && !this.searchText) {
      if (!confirm("Delete for good?")) return;
      await this.destroy(ids);
      toast("Deleted");
    } else {
      await this.moveTo(ids, trash.id);
      toast("Moved to Trash");
    }
  }

  async junkEmails(ids) {
    const junk = this.mailboxByRole("junk");
    if (!junk) { toast("No Junk folder", true); return; }
    await this.moveTo(ids, junk.id, { "keywords/$junk": true, "keywords/$notjunk": null });
    toast("Marked as junk");
  }

  // Out of Junk into the Inbox; the server learns it as wanted mail (filter/spam/train.py).
  async notJunkEmails(ids) {
    const inbox = this.mailboxByRole("inbox");
    if (!inbox) return;
    await this.moveTo(ids, inbox.id, { "keywords/$notjunk": true, "keywords/$junk": null });
    toast("Moved to the Inbox: not junk");
  }

  async refresh() {
    await this.loadMailboxes();
    await this.loadList({ keepSelection: true });
  }

  // RFC 8620 §7.1 StateChange: refresh when Email or Mailbox state moved, coalesced.
  onPush(change) {
    const states = (change.changed || {})[this.jmap.accountId];
    if (!states) return;
    clearTimeout(this.refreshTimer);
    this.refreshTimer = setTimeout(() => this.refresh().catch((e) => console.warn(e)), 250);
  }

  // -- views and chrome -----------------------------------------------------------------
  setView(view) {
    document.body.classList.remove("view-list", "view-message", "view-compose", "view-folders");
    document.body.classList.add("view-" + view);
    document.getElementById("compose-pane").hidden = view !== "compose";
  }

  back() {
    if (document.body.classList.contains("view-compose")) { this.composer.close(); return; }
    this.reader.close();
    this.setView("list");
    const row = document.querySelector("#message-list li.selected");
    if (row) row.focus();
  }

  bindChrome() {
    document.getElementById("search-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const input = document.getElementById("search");
      this.search(input.value);
      input.blur();
    });
    document.getElementById("compose-button").addEventListener("click", () => this.composer.openNew());
    document.getElementById("newer").addEventListener("click", () => this.page(-1));
    document.getElementById("older").addEventListener("click", () => this.page(1));
    document.getElementById("menu-toggle").addEventListener("click", () =>
      document.body.classList.toggle("folders-open"));
    document.getElementById("back-to-folders").addEventListener("click", () =>
      document.body.classList.add("folders-open"));
    document.getElementById("mailboxes").addEventListener("click", () =>
      document.body.classList.remove("folders-open"));
    document.addEventListener("keydown", (ev) => this.onKey(ev));
  }

  // Gmail/Fastmail-style single-key shortcuts, ignored while typing.
  onKey(ev) {
    const t = ev.target;
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    if (t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName))) {
      if (ev.key === "Escape") t.blur();
      return;
    }
    const reading = document.body.classList.contains("view-message");
    const composing = document.body.classList.contains("view-compose");
    const current = this.reader.current;
    const actions = {
      j: () => { this.select(this.selected + 1); if (reading) this.openSelected(); },
      k: () => { this.select(Math.max(0, this.selected - 1)); if (reading) this.openSelected(); },
      Enter: () => { if (!reading) this.openSelected(); },
      o: () => this.openSelected(),
      u: () => this.back(),
      Escape: () => this.back(),
      c: () => this.composer.openNew(),
      "/": () => document.getElementById("search").focus(),
      r: () => current && this.composer.openReply(current, "reply"),
      a: () => current && this.composer.openReply(current, "all"),
      f: () => current && this.composer.openReply(current, "forward"),
      "#": () => {
        const ids = reading && current ? [current.id] : this.selectedIds();
        if (ids.length) this.deleteEmails(ids).then(() => { if (reading) this.back(); });
      },
      s: () => {
        const e = reading && current ? current : this.emails[this.selected];
        if (e) this.setKeyword([e.id], "$flagged", !(e.keywords || {}).$flagged);
      },
    };
    if (composing && ev.key !== "Escape") return;
    const action = actions[ev.key];
    if (action) { ev.preventDefault(); action(); }
  }

  selectedIds() {
    const e = this.emails[this.selected];
    return e ? [e.id] : [];
  }
}

const app = new App();
window.addEventListener("DOMContentLoaded", () => app.start());
// Any failed action ends here: an expired session goes back to the login page, anything
// else is shown rather than lost in the console.
window.addEventListener("unhandledrejection", (ev) => {
  const err = ev.reason;
  if (err instanceof JMAPError && err.type === "unauthorized") { location.href = "/login"; return; }
  toast(err && err.message ? err.message : String(err), true);
});

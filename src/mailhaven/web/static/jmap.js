// A small JMAP client (RFC 8620 core, RFC 8621 mail) for the webmail.
// Authentication is the session cookie; every POST carries the X-CSRF-Token header.

export const CORE = "urn:ietf:params:jmap:core";
export const MAIL = "urn:ietf:params:jmap:mail";
export const SUBMISSION = "urn:ietf:params:jmap:submission";
export const VACATION = "urn:ietf:params:jmap:vacationresponse";

export class JMAPError extends Error {
  constructor(type, description, method) {
    super(`${method || "request"}: ${type}${description ? " — " + description : ""}`);
    this.type = type;
  }
}

// RFC 6570 level-1 expansion, the only kind RFC 8620 §2 uses in its URL templates.
export function expandTemplate(template, values) {
  return template.replace(/\{([a-zA-Z]+)\}/g, (_, name) => encodeURIComponent(values[name] ?? ""));
}

export class JMAPClient {
  constructor(csrfToken) {
    this.csrfToken = csrfToken;
    this.session = null;
    this.accountId = null;
  }

  async connect() {
    const res = await fetch("/.well-known/jmap", {
      credentials: "same-origin",
      headers: { "Accept": "application/json", "X-CSRF-Token": this.csrfToken },
    });
    if (res.status === 401 || res.status === 403) throw new JMAPError("unauthorized", "", "session");
    if (!res.ok) throw new JMAPError("session", `HTTP ${res.status}`, "session");
    this.session = await res.json();
    // The webmail is served by the JMAP server itself: keep every endpoint on this origin
    // (the session may name the configured hostname, which CSP connect-src 'self' refuses).
    for (const key of ["apiUrl", "downloadUrl", "uploadUrl", "eventSourceUrl"]) {
      if (typeof this.session[key] === "string") {
        this.session[key] = this.session[key].replace(/^[a-z][a-z0-9+.-]*:\/\/[^/]+/i, "");
      }
    }
    this.accountId = this.session.primaryAccounts[MAIL];
    return this.session;
  }

  get username() { return this.session ? this.session.username : ""; }

  // methodCalls: [[name, args, callId], ...]; returns {callId: args} and throws on any error
  // response, except for calls listed in `tolerate`.
  async request(methodCalls, tolerate = []) {
    const using = [CORE, MAIL];
    if (methodCalls.some(([name]) => name.startsWith("EmailSubmission") || name.startsWith("Identity"))) {
      using.push(SUBMISSION);
    }
    if (methodCalls.some(([name]) => name.startsWith("VacationResponse"))) using.push(VACATION);
    const res = await fetch(this.session.apiUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json",
                 "X-CSRF-Token": this.csrfToken },
      body: JSON.stringify({ using, methodCalls }),
    });
    if (res.status === 401) throw new JMAPError("unauthorized", "", "api");
    const body = await res.json().catch(() => null);
    if (!res.ok || !body || !body.methodResponses) {
      throw new JMAPError((body && body.type) || "http", (body && body.detail) || `HTTP ${res.status}`, "api");
    }
    const out = {};
    for (const [name, args, callId] of body.methodResponses) {
      if (name === "error" && !tolerate.includes(callId)) {
        throw new JMAPError(args.type, args.description, callId);
      }
      // RFC 8621 §7.5: an implicit Email/set follows EmailSubmission/set with the same
      // call id; callers want the first response of each call.
      if (!(callId in out)) out[callId] = name === "error" ? { error: args } : args;
    }
    return out;
  }

  async call(name, args) {
    const out = await this.request([[name, { accountId: this.accountId, ...args }, "0"]]);
    return out["0"];
  }

  downloadUrl(blobId, name, type) {
    return expandTemplate(this.session.downloadUrl, {
      accountId: this.accountId, blobId, name: name || "attachment",
      type: type || "application/octet-stream",
    });
  }

  async upload(file) {
    const url = expandTemplate(this.session.uploadUrl, { accountId: this.accountId });
    const res = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": file.type || "application/octet-stream", "X-CSRF-Token": this.csrfToken },
      body: file,
    });
    if (!res.ok) throw new JMAPError("upload", `HTTP ${res.status}`, "upload");
    return res.json();  // {accountId, blobId, type, size} (RFC 8620 §6.1)
  }

  // RFC 8620 §7.3: push over EventSource; onChange gets the StateChange object.
  // onConnection(true|false) follows the stream: false when it drops (EventSource then
  // retries by itself), true when it is open again. A stream refused for good (the server
  // came back without this session, say) is retried here; a 401 then ends in
  // onConnection("unauthorized").
  listen(onChange, onConnection = () => {}) {
    if (!this.session.eventSourceUrl || typeof EventSource === "undefined") return null;
    const url = expandTemplate(this.session.eventSourceUrl, { types: "*", closeafter: "no", ping: "30" });
    const source = new EventSource(url, { withCredentials: true });
    source.addEventListener("state", (ev) => {
      onConnection(true);
      try { onChange(JSON.parse(ev.data)); } catch (e) { console.warn("bad push event", e); }
    });
    source.addEventListener("ping", () => onConnection(true));
    source.addEventListener("open", () => onConnection(true));
    source.addEventListener("error", () => {
      onConnection(false);
      if (source.readyState === EventSource.CLOSED) this.relisten(onChange, onConnection);
    });
    return source;
  }

  relisten(onChange, onConnection, delay = 3000) {
    setTimeout(async () => {
      try {
        await this.connect();
      } catch (e) {
        if (e instanceof JMAPError && e.type === "unauthorized") { onConnection("unauthorized"); return; }
        this.relisten(onChange, onConnection, Math.min(delay * 2, 30000));
        return;
      }
      this.listen(onChange, onConnection);
    }, delay);
  }
}

// "Name <a@b>, c@d" -> [{name, email}]; tolerant of quotes and stray commas.
export function parseAddressList(text) {
  const out = [];
  const re = /\s*(?:"((?:[^"\\]|\\.)*)"|([^,<"]*?))\s*(?:<([^>]*)>)?\s*(?:,|$)/y;
  let m;
  let guard = 0;
  re.lastIndex = 0;
  while (re.lastIndex < text.length && (m = re.exec(text)) && guard++ < 500) {
    const quoted = m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : null;
    const bare = (m[2] || "").trim();
    if (m[3] !== undefined) {
      out.push({ name: quoted ?? bare ?? null, email: m[3].trim() });
    } else if (bare) {
      out.push({ name: null, email: bare });
    }
    if (m[0] === "") break;
  }
  return out.filter((a) => a.email.includes("@"));
}

export function formatAddress(a) {
  if (!a) return "";
  if (a.name) return /[",<>@]/.test(a.name) ? `"${a.name.replace(/["\\]/g, "\\$&")}" <${a.email}>` : `${a.name} <${a.email}>`;
  return a.email;
}

export function formatAddressList(list) {
  return (list || []).map(formatAddress).join(", ");
}

// The webmail's JMAP flows driven by jmap-jam (npm), against the server named by
// JMAP_SESSION with a bearer token (JMAP_TOKEN). Prints one JSON line: {"ok": true, ...}
// or exits non-zero with what went wrong. Run by tests/test_jmap_clients.py.
import JamClient from "jmap-jam";
import assert from "node:assert/strict";

const jam = new JamClient({ sessionUrl: process.env.JMAP_SESSION, bearerToken: process.env.JMAP_TOKEN });
const session = await jam.session;
assert.ok(session.apiUrl.startsWith("https://"), `apiUrl ${session.apiUrl}`);
const accountId = await jam.getPrimaryAccount();
assert.ok(accountId, "a primary mail account");

// Push: the session's eventSourceUrl read as a stream (jam's connectEventSource needs a
// browser EventSource, which cannot send a bearer token).
const esUrl = session.eventSourceUrl.replace("{types}", "*").replace("{closeafter}", "no").replace("{ping}", "0");
const controller = new AbortController();
const pushed = [];
const push = fetch(esUrl, { headers: { Authorization: `Bearer ${process.env.JMAP_TOKEN}` }, signal: controller.signal })
  .then(async (res) => {
    assert.equal(res.status, 200);
    const decoder = new TextDecoder();
    for await (const chunk of res.body) {
      for (const line of decoder.decode(chunk).split("\n")) {
        if (line.startsWith("data: ")) pushed.push(JSON.parse(line.slice(6)));
      }
    }
  }).catch((e) => { if (e.name !== "AbortError") throw e; });

// Mailboxes.
const [mailboxes] = await jam.api.Mailbox.get({ accountId, ids: null });
const roles = Object.fromEntries(mailboxes.list.filter((m) => m.role).map((m) => [m.role, m.id]));
for (const role of ["inbox", "drafts", "sent"]) assert.ok(roles[role], `role ${role}`);

// Query and get with a back-reference.
const [{ found }] = await jam.requestMany((t) => {
  const q = t.Email.query({ accountId, filter: { inMailbox: roles.inbox, subject: "for jam" } });
  const found = t.Email.get({ accountId, ids: q.$ref("/ids"), properties: ["subject", "from"] });
  return { q, found };
});
assert.deepEqual(found.list.map((e) => e.subject), ["for jam"]);

// Upload, then a draft with the upload attached, sent with onSuccessUpdateEmail.
const upload = await jam.uploadBlob(accountId, new Blob(["attached by jam\n"], { type: "text/plain" }));
assert.equal(upload.size, 16);
const [identities] = await jam.api.Identity.get({ accountId, ids: null });
const [sent] = await jam.requestMany((t) => {
  const draft = t.Email.set({
    accountId,
    create: {
      d: {
        mailboxIds: { [roles.drafts]: true }, keywords: { $draft: true, $seen: true },
        from: [{ email: identities.list[0].email }], to: [{ email: process.env.JMAP_TO }], subject: "from jam",
        bodyValues: { b: { value: "Hello from jmap-jam" } }, textBody: [{ partId: "b", type: "text/plain" }],
        attachments: [{ blobId: upload.blobId, type: "text/plain", name: "jam.txt" }],
      },
    },
  });
  const submission = t.EmailSubmission.set({
    accountId,
    create: { s: { emailId: "#d", identityId: identities.list[0].id } },
    onSuccessUpdateEmail: {
      "#s": { [`mailboxIds/${roles.drafts}`]: null, [`mailboxIds/${roles.sent}`]: true, "keywords/$draft": null },
    },
  });
  return { draft, submission };
});
assert.ok(sent.draft.created.d.id, "draft created");
// The implicit Email/set answers with the EmailSubmission/set's call id (RFC 8621 7.5), and
// jam keeps the last response per id: here that is the Email/set, every /set property there.
const implicit = sent.submission;
for (const key of ["created", "updated", "destroyed", "notCreated", "notUpdated", "notDestroyed"]) {
  assert.ok(key in implicit, `the implicit Email/set has ${key}`);
}
assert.ok(sent.draft.created.d.id in (implicit.updated ?? {}), `updated: ${JSON.stringify(implicit)}`);
const [submissions] = await jam.api.EmailSubmission.query({ accountId });
assert.ok(submissions.ids.length >= 1, "the submission is listed");

const [{ inSent }] = await jam.requestMany((t) => {
  const q = t.Email.query({ accountId, filter: { inMailbox: roles.sent, subject: "from jam" } });
  const inSent = t.Email.get({ accountId, ids: q.$ref("/ids"), properties: ["subject", "keywords", "attachments"] });
  return { q, inSent };
});
assert.deepEqual(inSent.list.map((e) => e.subject), ["from jam"]);
assert.ok(!inSent.list[0].keywords.$draft);
assert.equal(inSent.list[0].attachments[0].name, "jam.txt");

// The push stream saw the first state and a change after the send.
const deadline = Date.now() + 15000;
while (pushed.length < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
controller.abort();
await push;
assert.ok(pushed.length >= 2, `push events: ${pushed.length}`);
assert.equal(pushed[0]["@type"], "StateChange");
console.log(JSON.stringify({ ok: true, pushed: pushed.length }));

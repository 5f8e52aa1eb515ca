// VacationResponse (RFC 8621 8) driven by jmap-jam (npm), against the server named by
// JMAP_SESSION with a bearer token (JMAP_TOKEN): read the singleton, switch it on for the
// window FROM_DATE..TO_DATE, read it back, and check what may not be done to a singleton.
// Prints one JSON line {"ok": true, ...} or exits non-zero. Run by tests/test_jmap_vacation.py.
import JamClient from "jmap-jam";
import assert from "node:assert/strict";

const jam = new JamClient({ sessionUrl: process.env.JMAP_SESSION, bearerToken: process.env.JMAP_TOKEN });
const session = await jam.session;
const VACATION = "urn:ietf:params:jmap:vacationresponse";
assert.ok(VACATION in session.capabilities, "the vacationresponse capability");
const accountId = session.primaryAccounts[VACATION];
assert.ok(accountId, "a primary vacationresponse account");

const [before] = await jam.api.VacationResponse.get({ accountId, ids: null });
assert.equal(before.list.length, 1);
assert.equal(before.list[0].id, "singleton");
assert.equal(before.list[0].isEnabled, false);

const wanted = { isEnabled: true, fromDate: process.env.FROM_DATE, toDate: process.env.TO_DATE,
                 subject: "Out of office", textBody: "I am away this week.\nBack on Monday.", htmlBody: null };
const [set] = await jam.api.VacationResponse.set({ accountId, ifInState: before.state, update: { singleton: wanted } });
assert.deepEqual(set.updated, { singleton: null }, JSON.stringify(set));
assert.notEqual(set.newState, before.state);

const [after] = await jam.api.VacationResponse.get({ accountId, ids: ["singleton", "other"] });
assert.deepEqual(after.list, [{ id: "singleton", ...wanted }]);
assert.deepEqual(after.notFound, ["other"]);
assert.equal(after.state, set.newState);
const [some] = await jam.api.VacationResponse.get({ accountId, ids: null, properties: ["subject"] });
assert.deepEqual(some.list, [{ id: "singleton", subject: "Out of office" }]);

const [bad] = await jam.api.VacationResponse.set({
  accountId, create: { x: { isEnabled: true } }, destroy: ["singleton"],
  update: { singleton: { fromDate: "next tuesday" } } });
assert.equal(bad.notCreated.x.type, "singleton");
assert.equal(bad.notDestroyed.singleton.type, "singleton");
assert.equal(bad.notUpdated.singleton.type, "invalidProperties");

const [stale] = await jam.api.VacationResponse.set({ accountId, ifInState: before.state, update: { singleton: { isEnabled: false } } })
  .catch((e) => [e]);
assert.equal(stale.type, "stateMismatch");

console.log(JSON.stringify({ ok: true, state: after.state }));

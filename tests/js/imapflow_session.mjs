// imapflow (npm) driving a real Mailhaven, step by step, for tests/test_imap_imapflow.py.
//
// Each step prints one JSON line ({"step": name, ...what imapflow returned}); the Python
// test asserts on them. Where the test must act in between (deliver over SMTP while this
// client idles, change the mailbox from another connection before the QRESYNC resync) the
// script prints the step and waits for one line on stdin.
//
// env: IMAP_PORT, IMAP_USER, IMAP_PASS

import { ImapFlow } from 'imapflow';
import readline from 'node:readline';

const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

function report(step, data = {}) {
    process.stdout.write(JSON.stringify({ step, ...data }, (_, v) => (typeof v === 'bigint' ? v.toString() : v)) + '\n');
}

async function waitForLine() {
    const { value, done } = await lines.next();
    if (done) throw new Error('stdin closed');
    return value.trim();
}

function within(ms, promise, what) {
    return Promise.race([promise, new Promise((_, reject) => setTimeout(() => reject(new Error(`timeout: ${what}`)), ms))]);
}

function client() {
    return new ImapFlow({
        host: '127.0.0.1',
        port: Number(process.env.IMAP_PORT),
        secure: false,
        doSTARTTLS: false,
        auth: { user: process.env.IMAP_USER, pass: process.env.IMAP_PASS },
        logger: false,
        qresync: true
    });
}

function structure(node) {
    return {
        part: node.part || null,
        type: node.type,
        parameters: node.parameters || null,
        encoding: node.encoding || null,
        size: node.size ?? null,
        lineCount: node.lineCount ?? null,
        disposition: node.disposition || null,
        dispositionParameters: node.dispositionParameters || null,
        childNodes: (node.childNodes || []).map(structure)
    };
}

const c = client();
await c.connect();
report('login', { authenticated: c.authenticated, capabilities: [...c.capabilities.keys()], enabled: [...c.enabled] });

await c.mailboxCreate('Archive');
const listed = await c.list();
report('list', { paths: listed.map(m => m.path), specialUse: Object.fromEntries(listed.map(m => [m.path, m.specialUse || null])) });

// IDLE: wait for the test to deliver a message over SMTP, see it arrive as EXISTS.
let lock = await c.getMailboxLock('INBOX');
const before = c.mailbox.exists;
const arrived = new Promise(resolve => c.on('exists', resolve));
c.idle().catch(() => {});
await new Promise(resolve => setTimeout(resolve, 300));
report('idle-ready', { exists: before, idling: c.idling });
await waitForLine();
const event = await within(30000, arrived, 'EXISTS while idling');
report('idle', { prevCount: event.prevCount, count: event.count, path: event.path });

// FETCH: body structure, envelope, a partial source and partial body parts of the new message.
const fetched = await c.fetchOne(String(c.mailbox.exists), {
    uid: true,
    envelope: true,
    bodyStructure: true,
    size: true,
    source: { start: 0, maxLength: 40 },
    bodyParts: [{ key: '1', start: 2, maxLength: 5 }, '2']
});
const parts = {};
for (const [key, value] of fetched.bodyParts || new Map()) parts[key] = value.toString('latin1');
report('fetch', {
    uid: fetched.uid,
    size: fetched.size,
    subject: fetched.envelope.subject,
    from: fetched.envelope.from,
    bodyStructure: structure(fetched.bodyStructure),
    source: fetched.source.toString('latin1'),
    bodyParts: parts
});
const newUid = fetched.uid;

// APPEND to another mailbox, with a flag.
const appended = await c.append('Archive', Buffer.from(
    'From: Eve <eve@example.net>\r\nTo: bob@example.org\r\nSubject: appended by imapflow\r\n' +
    'Message-ID: <appended@example.net>\r\n\r\nStored with APPEND.\r\n'), ['\\Seen']);
report('append', { destination: appended.destination, uid: appended.uid, uidValidity: appended.uidValidity });

// SEARCH in INBOX.
const bySubject = await c.search({ subject: 'while you idle' }, { uid: true });
const byFrom = await c.search({ from: 'carol@example.net' }, { uid: true });
const unseen = await c.search({ seen: false }, { uid: true });
report('search', { bySubject, byFrom, unseen });

// MOVE the delivered message to Archive.
const moved = await c.messageMove(String(newUid), 'Archive', { uid: true });
report('move', { destination: moved.destination, uidMap: [...(moved.uidMap || new Map())], existsAfter: c.mailbox.exists });

// What a QRESYNC client keeps of INBOX, then away; the test changes the mailbox meanwhile.
const state = { uidValidity: c.mailbox.uidValidity, highestModseq: c.mailbox.highestModseq };
const inboxUids = await c.search({ all: true }, { uid: true });
lock.release();
const archive = await c.status('Archive', { messages: true });
await c.logout();
report('qresync-state', { ...state, uids: inboxUids, archiveMessages: archive.messages });
await waitForLine();

// Reconnect and resynchronise: SELECT INBOX (QRESYNC (uidvalidity modseq)).
const c2 = client();
const vanished = [];
const flags = [];
c2.on('expunge', ev => vanished.push({ uid: ev.uid ?? null, seq: ev.seq ?? null, vanished: ev.vanished, earlier: ev.earlier ?? null }));
c2.on('flags', ev => flags.push({ uid: ev.uid ?? null, flags: [...(ev.flags || [])] }));
await c2.connect();
lock = await c2.getMailboxLock('INBOX', { uidValidity: state.uidValidity, changedSince: state.highestModseq });
report('qresync', {
    enabled: [...c2.enabled],
    vanished,
    flags,
    exists: c2.mailbox.exists,
    uidValidity: c2.mailbox.uidValidity,
    highestModseq: c2.mailbox.highestModseq
});
lock.release();
await c2.logout();
report('done');
process.exit(0);

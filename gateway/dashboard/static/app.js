// Switchboard dashboard. Talks to the API only through the same-origin proxy (/ui/api/…), which
// adds the session's key on the server; every request that changes something carries the CSRF
// token of the page. No key, no token in storage.
'use strict';

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (sel) => document.querySelector(sel);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (method !== 'GET') opts.headers['X-CSRF-Token'] = csrf;
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  const res = await fetch('/ui/api/' + path, opts);
  if (res.status === 401) {
    location.reload(); // the session ended: back to sign-in
    throw new Error('signed out');
  }
  let data = null;
  try { data = await res.json(); } catch (e) { data = null; }
  return { status: res.status, ok: res.ok, data };
}

function errorText(r) {
  const e = r.data && r.data.error;
  return e ? e.message + ' (' + e.code + ')' : 'HTTP ' + r.status;
}

function when(t) {
  if (!t) return '';
  const d = new Date(t);
  return isNaN(d) ? '' : d.toLocaleString();
}

// mask shows a number or id the way the gateway's logs do: a few characters at each end.
function mask(s) {
  if (!s || s.length <= 8) return s || '';
  return s.slice(0, 3) + '*'.repeat(Math.min(s.length - 7, 6)) + s.slice(-4);
}

// ---- accounts and linking

async function loadAccounts() {
  const r = await api('GET', 'accounts');
  const body = $('#accounts tbody');
  body.replaceChildren();
  if (!r.ok) {
    const tr = el('tr');
    const td = el('td', errorText(r), 'error');
    td.colSpan = 6;
    tr.append(td);
    body.append(tr);
    return;
  }
  for (const a of r.data.accounts) {
    const tr = el('tr');
    tr.dataset.channel = a.channel;
    tr.dataset.account = a.account;
    const state = el('td', a.state + (a.detail ? ': ' + a.detail : ''), 'state state-' + a.state);
    tr.append(el('td', a.channel), el('td', a.account), el('td', a.driver), state, el('td', when(a.since)));
    const actions = el('td');
    if (a.linkable) {
      const b = el('button', 'Link', 'link');
      b.type = 'button';
      b.dataset.account = a.account;
      b.addEventListener('click', () => link(a.account));
      actions.append(b);
    }
    tr.append(actions);
    body.append(tr);
  }
}

let linkAbort = null;
let qrURL = null;

function setLink(state, text) {
  $('#link').dataset.state = state;
  $('#link-status').textContent = text;
}

function showQR(url) {
  if (qrURL) URL.revokeObjectURL(qrURL);
  qrURL = url;
  const img = $('#link-qr');
  if (url) {
    img.src = url;
    img.hidden = false;
  } else {
    img.removeAttribute('src');
    img.hidden = true;
  }
}

async function renderQR(code) {
  const res = await fetch('/ui/qr', { method: 'POST', headers: { 'X-CSRF-Token': csrf, 'Content-Type': 'text/plain' }, body: code });
  if (!res.ok) throw new Error('QR image: HTTP ' + res.status);
  return URL.createObjectURL(await res.blob());
}

async function onLinkEvent(type, data) {
  switch (type) {
    case 'qr':
      setLink('qr', 'Scan this QR code on the phone: WhatsApp › Settings › Linked devices › Link a device.');
      try { showQR(await renderQR(data.qr)); } catch (e) { setLink('error', e.message); }
      break;
    case 'pairing_code':
      showQR(null);
      $('#link-code').textContent = data.pairing_code;
      $('#link-code').hidden = false;
      setLink('pairing_code', data.message || 'Type this code on the phone.');
      break;
    case 'notice':
      $('#link-status').textContent = data.message;
      break;
    case 'success':
      showQR(null);
      $('#link-code').hidden = true;
      setLink('success', 'Linked' + (data.phone ? ' to ' + data.phone : '') + '.');
      loadAccounts();
      break;
    case 'timeout':
    case 'error':
      showQR(null);
      setLink(type, data.message + ' (' + data.code + ')');
      break;
  }
}

// link runs POST …/link and reads its Server-Sent Events from the response body (EventSource
// cannot POST or send the CSRF header).
async function link(account) {
  if (linkAbort) linkAbort.abort();
  const ctrl = new AbortController();
  linkAbort = ctrl;
  $('#link').hidden = false;
  $('#link-account').textContent = account;
  $('#link-code').hidden = true;
  showQR(null);
  setLink('starting', 'Starting…');
  let res;
  try {
    res = await fetch('/ui/api/accounts/whatsapp/' + encodeURIComponent(account) + '/link', {
      method: 'POST', headers: { 'X-CSRF-Token': csrf }, signal: ctrl.signal,
    });
  } catch (e) {
    if (!ctrl.signal.aborted) setLink('error', 'The link could not start: ' + e.message);
    return;
  }
  if (!res.ok) {
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    setLink('error', errorText({ status: res.status, data }));
    return;
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let type = '';
        let data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('event: ')) type = line.slice(7);
          else if (line.startsWith('data: ')) data += line.slice(6);
        }
        if (type) await onLinkEvent(type, data ? JSON.parse(data) : {});
      }
    }
  } catch (e) {
    if (!ctrl.signal.aborted) setLink('error', 'The link stream broke: ' + e.message);
  }
}

$('#link-cancel').addEventListener('click', () => {
  if (linkAbort) linkAbort.abort(); // closing the stream cancels the link on the server
  linkAbort = null;
  showQR(null);
  $('#link').hidden = true;
});

// ---- messages, live

const rank = { accepted: 0, queued: 1, sent: 2, delivered: 3, read: 4, played: 5, received: 2 };

function upsertMessage(m) {
  const body = $('#messages tbody');
  let tr = body.querySelector('tr[data-id="' + CSS.escape(m.id) + '"]');
  if (!tr) {
    tr = el('tr');
    tr.dataset.id = m.id;
    for (const cls of ['id', 'direction', 'channel', 'account', 'peer', 'status', 'updated']) tr.append(el('td', '', cls));
    body.prepend(tr);
    while (body.children.length > 50) body.lastChild.remove();
  }
  const set = (cls, v) => { if (v) tr.querySelector('td.' + cls).textContent = v; };
  set('id', m.id);
  set('direction', m.direction);
  set('channel', m.channel);
  set('account', m.account);
  set('peer', mask(m.direction === 'inbound' ? m.from : m.to));
  const cur = tr.dataset.status;
  const next = m.status;
  // Status only moves forward; terminal failures always show.
  if (next && (!cur || !(cur in rank) || !(next in rank) || rank[next] > rank[cur])) {
    tr.dataset.status = next;
    const td = tr.querySelector('td.status');
    td.textContent = next + (m.error ? ': ' + m.error.code : '');
    td.className = 'status status-' + next;
  }
  set('updated', when(m.updated_at || m.at));
}

function startEvents() {
  const es = new EventSource('/ui/api/events?type=message.status,message.inbound');
  es.addEventListener('open', () => { $('#live').textContent = 'live'; $('#live').dataset.live = 'true'; });
  es.addEventListener('error', () => { $('#live').textContent = 'reconnecting…'; $('#live').dataset.live = 'false'; });
  es.addEventListener('message.status', (ev) => {
    const e = JSON.parse(ev.data);
    upsertMessage({ id: e.message_id, channel: e.channel, account: e.account, status: e.status, error: e.error, at: e.at });
  });
  es.addEventListener('message.inbound', (ev) => {
    const e = JSON.parse(ev.data);
    if (e.id) upsertMessage(e);
  });
}

async function loadMessages() {
  const r = await api('GET', 'messages?limit=20');
  if (!r.ok) return;
  for (const m of r.data.data.slice().reverse()) upsertMessage(m);
}

$('#send-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const body = { channel: $('#send-channel').value, to: $('#send-to').value.trim(), text: $('#send-text').value };
  const r = await api('POST', 'messages', body);
  const out = $('#send-result');
  if (!r.ok) {
    out.textContent = 'Refused: ' + errorText(r);
    out.className = 'error';
    return;
  }
  out.textContent = 'Accepted: ' + r.data.id;
  out.className = '';
  out.dataset.id = r.data.id;
  upsertMessage({ id: r.data.id, direction: 'outbound', channel: body.channel, to: body.to, status: r.data.status });
});

// ---- consent

$('#consent-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const ch = $('#consent-channel').value;
  const subject = $('#consent-subject').value.trim();
  const out = $('#consent-result');
  out.replaceChildren();
  const r = await api('GET', 'consent/' + encodeURIComponent(ch) + '/' + encodeURIComponent(subject));
  if (!r.ok) {
    out.append(el('p', r.status === 404 ? 'Nothing recorded for this number.' : errorText(r), r.status === 404 ? '' : 'error'));
    return;
  }
  out.append(el('p', 'State: ' + r.data.state, 'consent-state'));
  const history = r.data.history || [];
  if (history.length) {
    const t = el('table');
    const head = el('tr');
    for (const h of ['When', 'State', 'Category', 'Source']) head.append(el('th', h));
    t.append(head);
    for (const h of history) {
      const tr = el('tr');
      tr.append(el('td', when(h.at)), el('td', h.state), el('td', h.category || ''), el('td', h.source));
      t.append(tr);
    }
    out.append(t);
  }
});

// ---- webhooks

async function loadWebhooks() {
  const out = $('#webhooks');
  out.replaceChildren();
  const r = await api('GET', 'webhooks');
  if (r.status === 404 || (r.ok && (!r.data.webhooks || r.data.webhooks.length === 0))) {
    out.append(el('p', 'No webhooks.', 'empty'));
    return;
  }
  if (!r.ok) {
    out.append(el('p', errorText(r), 'error'));
    return;
  }
  for (const w of r.data.webhooks) {
    const box = el('div', null, 'webhook');
    box.append(el('h3', w.url + (w.disabled ? ' (disabled)' : '')), el('p', (w.events || []).join(', '), 'events'));
    const d = await api('GET', 'webhooks/' + encodeURIComponent(w.id) + '/deliveries');
    if (!d.ok) {
      box.append(el('p', errorText(d), 'error'));
    } else if (!d.data.deliveries || d.data.deliveries.length === 0) {
      box.append(el('p', 'No deliveries yet.', 'empty'));
    } else {
      const t = el('table');
      const head = el('tr');
      for (const h of ['When', 'Event', 'Message', 'Attempt', 'Status', 'Latency', 'Error']) head.append(el('th', h));
      t.append(head);
      for (const x of d.data.deliveries) {
        const tr = el('tr');
        tr.append(el('td', when(x.at)), el('td', x.event), el('td', x.message_id || ''), el('td', x.attempt),
          el('td', x.status_code || ''), el('td', x.latency_ms !== undefined ? x.latency_ms + ' ms' : ''), el('td', x.error || ''));
        t.append(tr);
      }
      box.append(t);
    }
    out.append(box);
  }
}

startEvents();
loadAccounts();
loadMessages();
loadWebhooks();

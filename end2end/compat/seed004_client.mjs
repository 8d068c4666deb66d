// Seed 004's Socket.IO client flow (its React client's calls, with
// `socket.io-client` v4), run under Node against rill.
//
// As the seed's guide does it: `io(url, {path: '/socket.io', transports})`,
// wait for `connection_status`, `join_project {project_id: 1}` →
// `project_joined`, `send_message {chat_id: 1, message, model, temperature,
// include_history}` → `message_received`, `message_sources`, `message_token`
// × n (appended per chat), `message_complete` (reading `metadata.model` and
// `metadata.sources_count`), `ping` → `pong` (latency from `timestamp`), then
// `leave_project` → `project_left`. Notifications (`document_status`,
// `project_update`) are collected while joined.
//
// Usage: node seed004_client.mjs URL TRANSPORTS [TOKEN] [WAIT_FOR_NOTIFICATION]
//   TRANSPORTS: websocket | polling | websocket,polling (the seed's) | upgrade
// The last line printed is a JSON summary the end-to-end test checks.

import { io } from 'socket.io-client';

const [url, transportArg = 'websocket,polling', token = '', waitFor = ''] = process.argv.slice(2);
const transports = transportArg === 'upgrade' ? ['polling', 'websocket'] : transportArg.split(',');
const options = { path: '/socket.io', transports, reconnection: false };
if (token) options.auth = { token };
const socket = io(url, options);
const summary = {
  connected: false, status: null, joined: null, received: null, sources: null,
  text: '', tokens: 0, complete: null, latency: null, left: null, errors: [],
  notifications: [], transport: null, connect_error: null,
};
const timer = setTimeout(() => finish('timeout'), 30000);

function finish(reason) {
  clearTimeout(timer);
  summary.end = reason;
  summary.transport = socket.io.engine ? socket.io.engine.transport.name : null;
  socket.close();
  console.log(JSON.stringify(summary));
}

socket.on('connect', () => { summary.connected = true; console.log('Connected:', socket.id); });
socket.on('connect_error', (error) => { summary.connect_error = error.message; finish('connect_error'); });
socket.on('error', (data) => summary.errors.push(data));
socket.on('connection_status', (data) => {
  summary.status = data.status;
  socket.emit('join_project', { project_id: 1 });
});
socket.on('project_joined', (data) => {
  summary.joined = data.project_id;
  if (waitFor) {
    console.log('WAITING');
    return;
  }
  socket.emit('send_message', {
    chat_id: 1, message: 'What is this document about?', model: 'llama3.2', temperature: 0.7, include_history: true,
  });
});
for (const name of ['document_status', 'project_update']) {
  socket.on(name, (data) => {
    summary.notifications.push({ event: name, data });
    if (waitFor && name === waitFor) finish('notified');
  });
}
socket.on('message_received', (data) => { summary.received = data.chat_id; });
socket.on('message_sources', (data) => { summary.sources = data.sources; });
socket.on('message_token', (data) => {
  summary.text += data.token;
  summary.tokens += 1;
  if (data.chat_id !== 1) summary.errors.push({ message: `token for chat ${data.chat_id}` });
});
socket.on('message_complete', (data) => {
  summary.complete = data;
  socket.emit('ping');
});
socket.on('pong', (data) => {
  summary.latency = Date.now() - data.timestamp;
  socket.emit('leave_project', { project_id: 1 });
});
socket.on('project_left', (data) => { summary.left = data.project_id; finish('done'); });

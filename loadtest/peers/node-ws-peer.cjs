// A Node `ws` peer for the benchmark suite: the server a team running Node
// would write for the same protocol — one ws.send per frame, frames built
// once, the same pacing as rill's demo (a pause between tokens). It answers
// `message`, `hello` and `ping` like rill's native dialect; nothing else.
//
//   node node-ws-peer.cjs <path to the ws package> <port> <tokens> <delay ms>
'use strict';
const [wsPath, port, tokenCount, delayMs] = process.argv.slice(2);
const { WebSocketServer } = require(wsPath);

const id = 'nodepeer00000000000000000000000000';
const words = Array.from({ length: Math.max(1, Number(tokenCount)) }, (_, i) => {
  const word = ['stream', 'token', 'reply', 'server', 'rill', 'fast'][i % 6];
  return i === 0 ? word : ` ${word}`;
});
const head = [
  { type: 'start', stream_id: id, seq: 1, session_id: 'node', message_id: 'm', persona_id: 'assistant', model: 'demo' },
  { type: 'progress', stream_id: id, seq: 2, step: 'starting', message: 'Processing started' },
  { type: 'progress', stream_id: id, seq: 3, step: 'generating', message: 'Generating response...' },
].map((f) => JSON.stringify(f));
const tokens = words.map((token, i) => JSON.stringify({ type: 'token', stream_id: id, seq: 4 + i, token }));
const tail = JSON.stringify({
  type: 'complete', stream_id: id, seq: 4 + words.length, response: words.join(''), session_id: 'node',
  metadata: { agent: 'assistant', model: 'demo', finish_reason: 'stop', sources: [], context: { sources: [] } },
});
const hello = JSON.stringify({ type: 'hello', connection_id: 'node', protocol: 1, server: 'node-ws', heartbeat_ms: 30000, auth_required: false, limits: { max_frame_bytes: 65536, max_personas: 8 } });
const pong = JSON.stringify({ type: 'pong', timestamp: 1, server_time: 0 });
const delay = Number(delayMs);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function reply(ws) {
  for (const frame of head) ws.send(frame);
  for (let i = 0; i < tokens.length; i++) {
    if (i > 0 && delay > 0) await sleep(delay);
    if (ws.readyState !== ws.OPEN) return;
    ws.send(tokens[i]);
  }
  ws.send(tail);
}

const server = new WebSocketServer({ host: '127.0.0.1', port: Number(port), backlog: 4096 });
server.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let frame;
    try {
      frame = JSON.parse(String(data));
    } catch {
      return;
    }
    if (frame.type === 'message') reply(ws);
    else if (frame.type === 'hello') ws.send(hello);
    else if (frame.type === 'ping') ws.send(pong);
  });
});
server.on('listening', () => console.log(`node-ws peer listening on 127.0.0.1:${port}`));

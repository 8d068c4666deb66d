// Seed 002's JavaScript WebSocket example, run under Node against rill's `/ws`.
//
// As the seed's example does it: on open it sends
// `{type: 'openai_chat', data: {input_text, model}}`, and on each message it
// parses the JSON and writes `data.chunk` for frames of type `chunk`. Then, as
// the seed's React hook collects them, it keeps every frame; it also asks a
// `multi_chat` of the seed's three personas and a `chat` of one, with the
// seed's request fields (`api`, `temperature`, `max_tokens`).
//
// Usage: node seed002_client.mjs WS_URL
// The last line printed is a JSON summary the end-to-end test checks.

import { createRequire } from 'node:module';

// Node 20 has no global WebSocket by default; the `ws` package provides the same API.
if (typeof globalThis.WebSocket === 'undefined') {
  globalThis.WebSocket = createRequire(import.meta.url)('ws');
}

const url = process.argv[2];
const requests = [
  { type: 'openai_chat', data: { input_text: 'Hello, world!', model: 'gpt-4o-mini' } },
  {
    type: 'chat',
    data: {
      message: "What's your favorite programming language?",
      persona_id: 'tech_enthusiast',
      api: 'openai',
      model: 'gpt-4o-mini',
      temperature: 0.7,
      max_tokens: 1000,
    },
  },
  {
    type: 'multi_chat',
    data: {
      message: 'What do you think about AI?',
      persona_ids: ['tech_enthusiast', 'creative_writer', 'data_scientist'],
      api: 'openai',
      model: 'gpt-4o-mini',
      temperature: 0.7,
      max_tokens: 1000,
    },
  },
];

const ws = new WebSocket(url);
const messages = [];
const summary = { chunks: [], responses: [], persona_responses: [], statuses: [], errors: [] };
let asked = 0;

function next() {
  if (asked === requests.length) {
    ws.close();
    return;
  }
  summary.chunks.push('');
  ws.send(JSON.stringify(requests[asked]));
  asked += 1;
}

ws.onopen = function () {
  console.log('Connected to WebSocket');
  next();
};

ws.onmessage = function (event) {
  const data = JSON.parse(event.data);
  messages.push(data);
  if (data.type === 'chunk') {
    process.stdout.write(data.chunk);
    summary.chunks[summary.chunks.length - 1] += data.chunk;
  } else if (data.type === 'status') {
    summary.statuses.push(data.status);
  } else if (data.type === 'persona_response') {
    summary.persona_responses.push({ persona_id: data.persona_id, index: data.index, response: data.response });
  } else if (data.type === 'error') {
    summary.errors.push(data.message);
    next();
  } else if (data.type === 'response' && data.status === 'completed') {
    summary.responses.push(data.data);
    process.stdout.write('\n');
    next();
  }
};

ws.onclose = function () {
  summary.frames = messages.length;
  console.log(JSON.stringify(summary));
};

ws.onerror = function (error) {
  summary.errors.push(String(error.message || error));
};

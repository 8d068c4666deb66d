// Seed 003's JavaScript `ChatWebSocket` client flow, run under Node against rill.
//
// The class behaves as the seed's example does: on open it sends an `auth` frame
// when it has a token; it dispatches `auth_success`, `auth_error`, `progress`,
// `token` (with `token` and `partial_response`), `complete` (with `response` and
// `metadata`, reading `metadata.agent` and `metadata.confidence`) and `error`;
// `sendMessage(message, sessionId = null)` sends `{type, message, session_id}`
// (so `session_id: null` when none); the usage sends its question one second
// after connecting, and appends each token to the "response" text.
//
// Usage: node seed003_client.mjs WS_URL TOKEN [QUESTION]
// The last line printed is a JSON summary the end-to-end test checks.

import { createRequire } from 'node:module';

// Node 20 has no global WebSocket by default; the `ws` package provides the same API.
if (typeof globalThis.WebSocket === 'undefined') {
  globalThis.WebSocket = createRequire(import.meta.url)('ws');
}

class ChatWebSocket {
  constructor(url, token) {
    this.url = url;
    this.token = token;
    this.ws = null;
    this.onMessage = null;
    this.onProgress = null;
    this.onComplete = null;
    this.onError = null;
  }

  connect() {
    this.ws = new WebSocket(this.url);
    this.ws.onopen = () => {
      console.log('Connected');
      if (this.token) {
        this.ws.send(JSON.stringify({ type: 'auth', token: this.token }));
      }
    };
    this.ws.onmessage = (event) => {
      const data = JSON.parse(event.data);
      switch (data.type) {
        case 'auth_success':
          console.log('Authenticated:', data.user);
          break;
        case 'auth_error':
          if (this.onError) this.onError(data.message);
          break;
        case 'progress':
          if (this.onProgress) this.onProgress(data.step, data.message);
          break;
        case 'token':
          if (this.onMessage) this.onMessage(data.token, data.partial_response);
          break;
        case 'complete':
          if (this.onComplete) this.onComplete(data.response, data.metadata);
          break;
        case 'error':
          if (this.onError) this.onError(data.error, data.code);
          break;
      }
    };
    this.ws.onerror = () => {
      if (this.onError) this.onError('WebSocket error', 'CONNECTION_ERROR');
    };
    this.ws.onclose = () => {
      console.log('Disconnected');
    };
  }

  sendMessage(message, sessionId = null) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      throw new Error('WebSocket not connected');
    }
    this.ws.send(JSON.stringify({ type: 'message', message: message, session_id: sessionId }));
  }

  disconnect() {
    if (this.ws) this.ws.close();
  }
}

const [url, token, question = 'What is the engine power?'] = process.argv.slice(2);
const summary = { steps: [], response_text: '', response: null, agent: null, confidence: null, errors: [] };
const chat = new ChatWebSocket(url, token);

chat.onProgress = (step, message) => {
  console.log(`[${step}] ${message}`);
  summary.steps.push(step);
};
chat.onMessage = (tokenText, partial) => {
  // The seed appends each token to an element's textContent.
  summary.response_text += tokenText;
};
chat.onComplete = (response, metadata) => {
  console.log('Complete:', response);
  console.log('Agent:', metadata.agent);
  console.log('Confidence:', metadata.confidence);
  summary.response = response;
  summary.agent = metadata.agent;
  summary.confidence = metadata.confidence ?? null;
  chat.disconnect();
  console.log(JSON.stringify(summary));
  process.exit(0);
};
chat.onError = (error, code) => {
  console.error(`Error [${code}]: ${error}`);
  summary.errors.push({ error, code });
};

chat.connect();
setTimeout(() => {
  chat.sendMessage(question);
}, 1000);
// A hang guard, not a performance check.
setTimeout(() => {
  console.log(JSON.stringify(summary));
  process.exit(1);
}, 30000);

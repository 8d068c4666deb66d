// A Socket.IO client that drops mid-reply and finishes it with rill's
// `resume_stream` on a new connection — what Socket.IO's own recovery does
// not do for a reply in flight.
//
// Usage: node seed004_resume.mjs URL
// The last line printed is a JSON summary the end-to-end test checks.

import { io } from 'socket.io-client';

const url = process.argv[2];
const options = { path: '/socket.io', transports: ['websocket'], reconnection: false };
const summary = { first: '', rest: '', response: null, stream_id: null, after_seq: 0, errors: [] };
const timer = setTimeout(() => done('timeout'), 30000);
function done(reason) {
  clearTimeout(timer);
  summary.end = reason;
  console.log(JSON.stringify(summary));
  process.exit(0);
}

const first = io(url, options);
first.on('connection_status', () => {
  first.emit('send_message', { chat_id: 'resume-1', message: 'Tell me a long story' });
});
first.on('message_token', (data) => {
  summary.first += data.token;
  summary.stream_id = data.stream_id;
  summary.after_seq = data.seq;
  if (summary.first.length > 80 && first.connected) {
    // Drop mid-reply, as a phone going into a tunnel would.
    first.disconnect();
    const second = io(url, options);
    second.on('connection_status', () => {
      second.emit('resume_stream', { stream_id: summary.stream_id, after_seq: summary.after_seq, chat_id: 'resume-1' });
    });
    second.on('message_token', (more) => { summary.rest += more.token; });
    second.on('message_complete', (complete) => {
      summary.response = complete.response;
      second.close();
      done('complete');
    });
    second.on('error', (error) => summary.errors.push(error));
  }
});
first.on('error', (error) => summary.errors.push(error));

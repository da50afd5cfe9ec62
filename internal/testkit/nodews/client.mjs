// A WebSocket client on the npm ws package, driven by Herald's tests
// (nodews.go): it connects to the URL given, sends every line of stdin as
// a text message, and prints every message it receives on stdout, one per
// line. When stdin ends it closes with 1000 and prints "closed CODE" once
// the close handshake is over. ws offers permessage-deflate by default, as
// in production, and answers pings itself. A second argument, if given, is
// the JSON of ws's client options (e.g. {"perMessageDeflate":{"threshold":0}}).
import WebSocket from 'ws';
import readline from 'node:readline';

const options = process.argv[3] ? JSON.parse(process.argv[3]) : {};
const ws = new WebSocket(process.argv[2], options);
const out = (line) => process.stdout.write(line + '\n');
// The extensions as the server's response put them, parameters included
// (ws.extensions names them only).
let extensions = '';
ws.on('upgrade', (res) => { extensions = res.headers['sec-websocket-extensions'] || ''; });
ws.on('open', () => {
  out('open ' + (extensions || '-'));
  const lines = readline.createInterface({ input: process.stdin });
  lines.on('line', (l) => ws.send(l));
  lines.on('close', () => ws.close(1000));
});
ws.on('message', (data, isBinary) => out(isBinary ? 'binary ' + data.length : data.toString()));
ws.on('close', (code) => { out('closed ' + code); process.exit(0); });
ws.on('error', (err) => { out('error ' + err.message); process.exit(1); });

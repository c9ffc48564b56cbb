// The node-web example: express on $PORT with /health and /; / names the release and instance,
// then the GREETING config value when it is set.
'use strict';

const os = require('os');
const express = require('express');

const port = Number(process.env.PORT || 5000);
const release = `v${process.env.PAAS_RELEASE || '0'}`;
const instance = process.env.PAAS_INSTANCE_ID || os.hostname();

const app = express();

app.get('/health', (req, res) => {
  res.type('text/plain').send('ok\n');
});

app.get('/', (req, res) => {
  const lines = [`hello from ${release} instance ${instance}`];
  if (process.env.GREETING) lines.push(process.env.GREETING);
  res.type('text/plain').send(lines.join('\n') + '\n');
});

const server = app.listen(port, () => {
  // One line on start, which `paas logs` shows.
  console.log(`node-web ${release} instance ${instance} listening on port ${port}`);
});

// Stop promptly on the platform's SIGTERM (node as PID 1 has no default handler).
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}

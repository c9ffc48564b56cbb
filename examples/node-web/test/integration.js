// Integration test of node-web, run by the platform from the image against the control instance
// of a new release (PAAS_TARGET_URL). Plain node, no framework: one case per endpoint; exits 1
// when any case fails.
'use strict';

const base = (process.env.PAAS_TARGET_URL || '').replace(/\/+$/, '');
if (!base) {
  console.error('PAAS_TARGET_URL must name the instance under test, e.g. http://127.0.0.1:5000');
  process.exit(2);
}

const cases = [
  { name: 'health', path: '/health', status: 200, body: 'ok' },
  { name: 'home', path: '/', status: 200, body: 'hello from v' },
  { name: 'unknown path', path: '/no-such-page', status: 404, body: '' },
];
if (process.env.PAAS_RELEASE) {
  cases.push({ name: 'serves this release', path: '/', status: 200, body: `hello from v${process.env.PAAS_RELEASE} ` });
}

async function run(c) {
  const res = await fetch(base + c.path, { signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  if (res.status !== c.status) throw new Error(`GET ${c.path} answered ${res.status}, want ${c.status}`);
  if (!text.includes(c.body)) throw new Error(`GET ${c.path}: body lacks ${JSON.stringify(c.body)}: ${text}`);
}

(async () => {
  let passed = 0;
  let failed = 0;
  for (const c of cases) {
    try {
      await run(c);
      passed += 1;
      console.log(`ok - ${c.name}`);
    } catch (err) {
      failed += 1;
      console.log(`not ok - ${c.name}: ${err.message}`);
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
})();

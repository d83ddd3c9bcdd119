/**
 * The small load balancer of `npm run stack`: round-robin over the Vellum nodes, HTTP and websocket
 * upgrades. A request's body is read first, so a node that refuses the connection is skipped (and
 * left out for a few seconds) and the request goes to the next; when none answers, 502. Answers
 * are streamed back as they come.
 *
 *   node --import tsx scripts/balancer.ts --port 8080 --upstream 127.0.0.1:8081 --upstream 127.0.0.1:8082
 */
import http from 'node:http';
import net from 'node:net';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: { port: { type: 'string', default: '8080' }, host: { type: 'string', default: '127.0.0.1' }, upstream: { type: 'string', multiple: true } },
  strict: true,
});
const upstreams = (values.upstream ?? []).map((u) => {
  const [host, port] = u.split(':');
  return { host: host!, port: Number(port), downUntil: 0 };
});
if (upstreams.length === 0) {
  console.error('usage: balancer.ts --port <port> --upstream host:port [--upstream host:port …]');
  process.exit(2);
}

/** Methods a client may send twice with the effect of once (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);

/** How long a node that refused a connection is left out. */
const DOWN_MS = 3_000;
let next = 0;

/** Upstreams in the order to try them for one request: round-robin, those marked down last. */
function order(): typeof upstreams {
  const start = next++ % upstreams.length;
  const rotated = [...upstreams.slice(start), ...upstreams.slice(0, start)];
  const now = Date.now();
  return [...rotated.filter((u) => u.downUntil <= now), ...rotated.filter((u) => u.downUntil > now)];
}

const server = http.createServer(async (req, res) => {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  const body = Buffer.concat(chunks);
  const candidates = order();
  const attempt = (i: number): void => {
    const target = candidates[i];
    if (!target) {
      res.writeHead(502, { 'content-type': 'application/fhir+json' });
      res.end(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'transient', diagnostics: 'No Vellum node answered' }] }));
      return;
    }
    // A connection per request (no keep-alive): a node that died is then refused, not a reused
    // socket cut off — which would leave a POST in doubt.
    const upstream = http.request({ host: target.host, port: target.port, method: req.method, path: req.url, headers: req.headers, agent: false }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', (err: NodeJS.ErrnoException) => {
      // Refused: nothing reached the node, so the next one may take the request. Cut off before an
      // answer (the node died with the request in flight): an idempotent request is sent again,
      // a POST or PATCH is not (it may have been done) and is answered 502.
      const refused = err.code === 'ECONNREFUSED';
      if (!res.headersSent && (refused || IDEMPOTENT.has(req.method ?? ''))) {
        target.downUntil = Date.now() + DOWN_MS;
        attempt(i + 1);
      } else if (!res.headersSent) {
        res.writeHead(502);
        res.end();
      } else res.destroy();
    });
    upstream.end(body);
  };
  attempt(0);
});

server.on('upgrade', (req, socket, head) => {
  const target = order()[0]!;
  const upstream = net.connect(target.port, target.host, () => {
    const lines = [`${req.method} ${req.url} HTTP/${req.httpVersion}`, ...Object.entries(req.headers).flatMap(([k, v]) => (Array.isArray(v) ? v : [v]).map((x) => `${k}: ${x}`))];
    upstream.write(`${lines.join('\r\n')}\r\n\r\n`);
    if (head.length) upstream.write(head);
    upstream.pipe(socket).pipe(upstream);
  });
  upstream.on('error', () => socket.destroy());
  socket.on('error', () => upstream.destroy());
});

server.listen(Number(values.port), values.host, () => {
  console.log(JSON.stringify({ ready: true, url: `http://${values.host}:${values.port}` }));
});
for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, () => server.close(() => process.exit(0)));

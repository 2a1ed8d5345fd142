// A real HTTP server on loopback that answers what a test scripts: for the answers the
// service under test cannot be made to give on demand (a result past its retention, a rate
// limit's headers, the x-request-id Serve adds, an answer that never comes).
import { createServer } from 'node:http';

export async function scripted(script) {
  const hits = {};
  let base;
  const requests = [];
  const server = createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const url = new URL(req.url, 'http://x');
    (hits[url.pathname] ??= []).push(Date.now());
    requests.push({ method: req.method, path: url.pathname, search: url.search, headers: req.headers, body: Buffer.concat(chunks) });
    const answer = script[url.pathname];
    const [status, headers, body, delayMs] = answer ? answer(hits[url.pathname].length, base) : [404, {}, {}];
    if (delayMs) await new Promise((resolve) => setTimeout(resolve, delayMs));
    const raw = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': raw.length, ...headers });
    res.end(raw);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${server.address().port}`;
  return {
    url: base, hits, requests,
    close: () => new Promise((resolve) => { server.closeAllConnections(); server.close(resolve); }),
  };
}

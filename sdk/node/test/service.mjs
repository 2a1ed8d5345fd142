// The real Tilemore service for the SDK's tests: tests/support/serve_for_sdk.py, the Python
// harness (no Ray), run by the repository's virtualenv or $TILEMORE_PYTHON.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const python = process.env.TILEMORE_PYTHON ?? path.join(repo, '.venv/bin/python');

/**
 * Starts the service and resolves, once it is up, to `{ info, stop }`: `info` is the line it
 * prints (url, token, proxy_url, samples, folder), `stop()` ends it (it serves until its
 * stdin closes). `stderr`: 'inherit' shows its log, 'ignore' hides it.
 */
export async function startService({ stderr = 'inherit' } = {}) {
  const server = spawn(python, [path.join(repo, 'tests/support/serve_for_sdk.py')],
    { stdio: ['pipe', 'pipe', stderr] });
  const info = await new Promise((resolve, reject) => {
    let buffered = '';
    server.stdout.on('data', (chunk) => {
      buffered += chunk;
      if (buffered.includes('\n')) resolve(JSON.parse(buffered.split('\n')[0]));
    });
    server.on('exit', (code) => reject(new Error(`the service exited (${code})`)));
  });
  return { info, stop: () => server.stdin.end() };
}

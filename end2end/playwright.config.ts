import { defineConfig } from '@playwright/test';
import * as os from 'node:os';
import * as path from 'node:path';
import * as fs from 'node:fs';
import { execFileSync } from 'node:child_process';

// The release binary, started from a directory with no site files in it: the
// UI must come from the binary itself.
export const RILL_BIN = process.env.RILL_BIN ?? path.resolve(__dirname, '../target/release/rill');
/** A free port, chosen once by the runner and passed to its workers through
 * the environment (the config is loaded again in every worker). */
function sharedPort(variable: string): number {
  if (!process.env[variable]) {
    const script =
      "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})";
    process.env[variable] = execFileSync(process.execPath, ['-e', script]).toString().trim();
  }
  return Number(process.env[variable]);
}
export const PORT = sharedPort('RILL_E2E_PORT');
export const JWT_SECRET = 'e2e-secret';
// Where the static (trunk) UI is served in its test: another origin, as in production.
export const STATIC_PORT = sharedPort('RILL_E2E_STATIC_PORT');
/** The server's data directory: made once by the runner (which loads this
 * config before its workers do) and passed to them like the ports; removed
 * when the runner exits, after it has stopped the server. */
function sharedDataDir(): string {
  const given = process.env.RILL_E2E_DATA_DIR;
  if (given) {
    return given;
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'rill-e2e-'));
  process.env.RILL_E2E_DATA_DIR = dir;
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}
const dataDir = sharedDataDir();

export default defineConfig({
  testDir: './tests',
  timeout: 60_000,
  expect: { timeout: 20_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [['list']],
  use: {
    baseURL: `http://127.0.0.1:${PORT}`,
    browserName: 'chromium',
    launchOptions: {
      executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
        '--disable-quic',
      ],
    },
    trace: 'off',
  },
  webServer: {
    command: `"${RILL_BIN}" --addr 127.0.0.1:${PORT} --data-dir "${dataDir}" --jwt-secret ${JWT_SECRET} --demo-delay-ms 20 --demo-tokens 160 --allow-origin http://127.0.0.1:${STATIC_PORT}`,
    cwd: os.tmpdir(),
    url: `http://127.0.0.1:${PORT}/health`,
    reuseExistingServer: false,
    timeout: 30_000,
    stdout: 'ignore',
    stderr: 'pipe',
  },
});

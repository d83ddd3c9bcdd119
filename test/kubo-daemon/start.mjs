#!/usr/bin/env node
/**
 * A real Kubo-RPC server for Vellum's KuboBlobStore integration test: the js-ipfs daemon
 * (npm `ipfs@0.66.1`, whose `ipfs-daemon` serves the Kubo RPC API over HTTP), fully offline.
 *
 *   node start.mjs --repo <dir> [--api-port <port>]
 *
 * - the repo is created at <dir> (empty: no init docs) or reused if it exists;
 * - API on 127.0.0.1:<port> (0, the default, lets the OS pick a free port);
 * - no swarm listeners, no bootstrap peers, no MDNS/WebRTC discovery, no delegates, no
 *   preload, no gateway and no gRPC: nothing is dialled and nothing but the API listens;
 * - once the API answers, one JSON line `{"ready":true,"api":"http://127.0.0.1:<port>",…}` is
 *   written to stdout; SIGTERM/SIGINT stop the daemon cleanly (exit 0).
 *
 * Needs Node 24 (js-ipfs 0.66 does not start on Node 20 here) and `npm ci` in this folder.
 * tap picks up every script under test/, so when run without arguments under tap this file
 * reports a skipped plan and exits without importing js-ipfs.
 */
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    repo: { type: 'string' },
    'api-port': { type: 'string', default: '0' },
  },
  strict: true,
});

if (values.repo === undefined) {
  if (process.env.TAP === '1') {
    console.log('1..0 # not a test: launcher of the js-ipfs daemon for test/storage/kubo-blob-store.int.test.ts');
    process.exit(0);
  }
  console.error('usage: node start.mjs --repo <dir> [--api-port <port>]');
  process.exit(2);
}

const port = Number(values['api-port']);
if (!Number.isInteger(port) || port < 0 || port > 65_535) {
  console.error(`invalid --api-port ${values['api-port']}`);
  process.exit(2);
}

const { Daemon } = await import('ipfs-daemon');

const daemon = new Daemon({
  repo: values.repo,
  offline: true,
  silent: true,
  preload: { enabled: false },
  init: { emptyRepo: true, algorithm: 'Ed25519' },
  config: {
    Addresses: {
      API: `/ip4/127.0.0.1/tcp/${port}`,
      Swarm: [],
      Announce: [],
      NoAnnounce: [],
      Gateway: [],
      RPC: '',
      Delegates: [],
    },
    Bootstrap: [],
    Discovery: { MDNS: { Enabled: false }, webRTCStar: { Enabled: false } },
    Pubsub: { Enabled: false },
    Routing: { Type: 'none' },
  },
});

// js-ipfs 0.66 leaves a rejection unhandled when a client disconnects while it is still looking
// for a block (e.g. a `cat` of a pinned file with a lost leaf, aborted at the client's deadline);
// Node would exit on it. Log and keep serving, as a long-running daemon should.
process.on('unhandledRejection', (reason) => {
  console.error('js-ipfs daemon: unhandled rejection (ignored):', reason instanceof Error ? reason.message : reason);
});

let stopping = false;
async function stop(signal) {
  if (stopping) return;
  stopping = true;
  try {
    await daemon.stop();
    process.exit(0);
  } catch (err) {
    console.error(`js-ipfs daemon: error while stopping on ${signal}:`, err);
    process.exit(1);
  }
}
for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(signal, () => void stop(signal));

try {
  await daemon.start();
} catch (err) {
  console.error('js-ipfs daemon failed to start:', err);
  process.exit(1);
}

const servers = daemon._httpApi?._apiServers ?? [];
const api = servers[0]?.info;
if (api === undefined) {
  console.error('js-ipfs daemon started without an HTTP API server');
  await daemon.stop();
  process.exit(1);
}
const { version } = await daemon._ipfs.version();
console.log(JSON.stringify({ ready: true, api: `http://127.0.0.1:${api.port}`, version, node: process.versions.node, pid: process.pid }));

/**
 * The write gate between the request thread and the audit converter thread (src/storage/write-gate.ts):
 * one holder at a time; the request thread waits without blocking its event loop; the converter
 * side yields to a waiting request thread; a converter thread that dies holding the gate does not
 * shut the request thread out.
 */
import { Worker } from 'node:worker_threads';
import t from 'tap';
import { WriteGate } from '../../src/storage/write-gate.ts';

/** A thread that takes the gate as the converter side (holder 2), tells us, and waits for our word to open it — or to die holding it. */
const HOLDER = `
const { workerData, parentPort } = require('node:worker_threads');
const state = new Int32Array(workerData.buffer);
while (Atomics.compareExchange(state, 0, 0, 2) !== 0) Atomics.wait(state, 0, Atomics.load(state, 0));
parentPort.postMessage('held');
parentPort.once('message', (m) => {
  if (m === 'release') { Atomics.store(state, 0, 0); Atomics.notify(state, 0); parentPort.postMessage('released'); }
  else process.exit(0);
});
`;

function holder(buffer: SharedArrayBuffer): Promise<Worker> {
  const worker = new Worker(HOLDER, { eval: true, workerData: { buffer } });
  return new Promise((resolve) => worker.once('message', () => resolve(worker)));
}

t.test('one holder at a time, and the waiting request thread keeps serving', async (t) => {
  const gate = new WriteGate({ priority: true });
  const worker = await holder(gate.buffer);
  let ran = false;
  const turn = gate.run(async () => {
    ran = true;
  });
  // The event loop is free while the gate is held elsewhere: this timer fires, and the turn has not run.
  await new Promise((resolve) => setTimeout(resolve, 20));
  t.notOk(ran, 'waits while the other thread holds the gate');
  const released = new Promise((resolve) => worker.once('message', resolve));
  worker.postMessage('release');
  await released;
  await turn;
  t.ok(ran, 'runs once the gate opens');
  await worker.terminate();
});

t.test('a holder that dies during its turn is released by the request thread', async (t) => {
  const gate = new WriteGate({ priority: true });
  const worker = await holder(gate.buffer);
  const exited = new Promise((resolve) => worker.once('exit', resolve));
  worker.postMessage('die');
  await exited;
  gate.releaseHeldByOther();
  t.equal(await gate.run(async () => 'mine'), 'mine');
});

t.test('turns on one thread never overlap; the converter side yields to a waiting request thread', async (t) => {
  const main = new WriteGate({ priority: true });
  const converter = new WriteGate({ buffer: main.buffer, priority: false });
  const order: string[] = [];
  let inside = 0;
  const turn = (gate: WriteGate, name: string) =>
    gate.run(async () => {
      inside++;
      t.equal(inside, 1, `${name}: alone`);
      order.push(name);
      await new Promise((resolve) => setImmediate(resolve));
      inside--;
    });
  // The converter holds; the request thread starts waiting; a second converter turn asks after it.
  const first = turn(converter, 'converter 1');
  await new Promise((resolve) => setImmediate(resolve));
  const request = turn(main, 'request');
  const second = turn(converter, 'converter 2');
  await Promise.all([first, request, second]);
  t.same(order, ['converter 1', 'request', 'converter 2'], 'the waiting request thread goes before the next converter turn');
});

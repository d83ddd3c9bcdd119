/**
 * src/chain/transaction-log.ts: records survive reopening, refused transactions are skipped,
 * a torn final line (crash during the write, so before the send) is dropped, and damage
 * anywhere else is VLM_CHAIN_LOG_CORRUPT.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import { TransactionLog, type LoggedTransaction } from '../../src/chain/transaction-log.ts';
import { rejectsCode } from './chain-helpers.ts';

const entry = (n: number): LoggedTransaction => ({
  hash: `0x${n.toString(16).padStart(64, '0')}`,
  block: n,
  timestamp: 1_767_225_600 + n,
  raw: `0x02${n.toString(16).padStart(8, '0')}`,
});

function tempFile(t: Test): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vellum-txlog-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  return path.join(dir, 'transactions.log');
}

t.test('append, refuse, reopen', async (t) => {
  const file = tempFile(t);
  const { log, entries } = await TransactionLog.open(file);
  t.same(entries, [], 'a new log is empty');
  t.equal(fs.statSync(file).mode & 0o777, 0o600, 'created private');
  await log.append(entry(1));
  await log.append(entry(2));
  await log.refused(entry(2).hash);
  await log.append(entry(3));
  await log.close();
  await rejectsCode(t, log.append(entry(4)), 'VLM_CHAIN_CLOSED');

  const again = await TransactionLog.open(file);
  t.same(again.entries, [entry(1), entry(3)], 'in order, without the refused one');
  await again.log.close();
});

t.test('a torn final line is dropped (and truncated away)', async (t) => {
  const file = tempFile(t);
  const { log } = await TransactionLog.open(file);
  await log.append(entry(1));
  await log.close();
  const good = fs.readFileSync(file, 'utf8');
  fs.appendFileSync(file, '{"v":1,"hash":"0xab');
  const reopened = await TransactionLog.open(file);
  t.same(reopened.entries, [entry(1)]);
  t.equal(fs.readFileSync(file, 'utf8'), good, 'the torn bytes are gone');
  await reopened.log.append(entry(2));
  await reopened.log.close();
  t.same((await TransactionLog.open(file).then(async (r) => (await r.log.close(), r))).entries, [entry(1), entry(2)], 'appending continues cleanly');
});

t.test('a damaged line before the end is VLM_CHAIN_LOG_CORRUPT', async (t) => {
  for (const [name, line] of [
    ['not JSON', '{"v":1,'],
    ['unknown version', JSON.stringify({ ...entry(2), v: 2 })],
    ['bad hash', JSON.stringify({ v: 1, ...entry(2), hash: '0x12' })],
    ['bad block', JSON.stringify({ v: 1, ...entry(2), block: 0 })],
  ] as const) {
    const file = tempFile(t);
    fs.writeFileSync(file, `${JSON.stringify({ v: 1, ...entry(1) })}\n${line}\n${JSON.stringify({ v: 1, ...entry(3) })}\n`);
    await rejectsCode(t, TransactionLog.open(file), 'VLM_CHAIN_LOG_CORRUPT', 'fault');
    t.pass(name);
  }
});

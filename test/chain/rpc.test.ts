/**
 * src/chain/rpc.ts: how node and transport failures are classified (by the shapes ethers and
 * Node give them), and the retry helper. Codes only, never messages.
 */
import t from 'tap';
import { classifyRpcError, retrying, revertDataOf } from '../../src/chain/rpc.ts';
import { chainError } from '../../src/chain/errors.ts';
import { rejectsCode } from './chain-helpers.ts';

/** An ethers error wrapping a node's JSON-RPC error, as `JsonRpcApiProvider.send` throws it. */
const fromNode = (message: string, data?: string) =>
  Object.assign(new Error('could not coalesce error'), { code: 'UNKNOWN_ERROR', info: { error: { code: -32000, message, data } } });

t.test('classification', async (t) => {
  const cases: [string, unknown, string, string][] = [
    ['connection refused', Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }), 'VLM_CHAIN_UNAVAILABLE', 'unavailable'],
    ['ethers timeout', Object.assign(new Error('timeout'), { code: 'TIMEOUT' }), 'VLM_CHAIN_UNAVAILABLE', 'unavailable'],
    ['HTTP 502', Object.assign(new Error('server response 502'), { code: 'SERVER_ERROR' }), 'VLM_CHAIN_UNAVAILABLE', 'unavailable'],
    ['nested cause', Object.assign(new Error('fetch failed'), { cause: Object.assign(new Error('x'), { code: 'ECONNRESET' }) }), 'VLM_CHAIN_UNAVAILABLE', 'unavailable'],
    ['EDR nonce too low', fromNode("Nonce too low. Expected nonce to be 3 but got 0. Note that transactions can't be queued when automining."), 'VLM_CHAIN_NONCE_TOO_LOW', 'conflict'],
    ['Geth nonce too low', fromNode('nonce too low: next nonce 5, tx nonce 4'), 'VLM_CHAIN_NONCE_TOO_LOW', 'conflict'],
    ['EDR nonce too high', fromNode('Nonce too high. Expected nonce to be 3 but got 10.'), 'VLM_CHAIN_NONCE_TOO_HIGH', 'conflict'],
    ['Geth already known', fromNode('already known'), 'VLM_CHAIN_TX_KNOWN', 'conflict'],
    ['Besu known', fromNode('Known transaction'), 'VLM_CHAIN_TX_KNOWN', 'conflict'],
    ['underpriced', fromNode('replacement transaction underpriced'), 'VLM_CHAIN_TX_UNDERPRICED', 'conflict'],
    ['funds', fromNode('insufficient funds for gas * price + value'), 'VLM_CHAIN_INSUFFICIENT_FUNDS', 'fault'],
    ['revert with data', fromNode('execution reverted', '0x1234567890'), 'VLM_CHAIN_REVERTED', 'fault'],
    ['anything else', fromNode('method handler crashed'), 'VLM_CHAIN_RPC_ERROR', 'fault'],
  ];
  for (const [name, err, code, category] of cases) {
    const classified = classifyRpcError('eth_test', err);
    t.equal(classified.code, code, name);
    t.equal(classified.category, category, `${name}: ${category}`);
    t.equal(classified.cause, err, `${name}: the original is the cause`);
  }
  const already = chainError('VLM_CHAIN_CLOSED', 'unavailable', 'closed');
  t.equal(classifyRpcError('eth_test', already), already, 'a ChainError passes through');
  t.equal(revertDataOf(fromNode('execution reverted', '0x1234567890')), '0x1234567890', 'revert data is found where ethers nests it');
});

t.test('retrying', async (t) => {
  let calls = 0;
  const flaky = async () => {
    calls++;
    if (calls < 3) throw chainError('VLM_CHAIN_UNAVAILABLE', 'unavailable', 'down');
    return 'ok';
  };
  t.equal(await retrying({ attempts: 3, baseDelayMs: 1, maxDelayMs: 2 }, flaky), 'ok', 'succeeds on the third attempt');
  calls = 0;
  await rejectsCode(t, retrying({ attempts: 2, baseDelayMs: 1, maxDelayMs: 2 }, flaky), 'VLM_CHAIN_UNAVAILABLE');
  t.equal(calls, 2, 'gives up after the attempts');

  calls = 0;
  await rejectsCode(t, retrying({ attempts: 5, baseDelayMs: 1, maxDelayMs: 2 }, async () => {
    calls++;
    throw chainError('VLM_CHAIN_REVERTED', 'fault', 'no');
  }), 'VLM_CHAIN_REVERTED');
  t.equal(calls, 1, 'never retries a fault');

  const controller = new AbortController();
  const pending = retrying({ attempts: 100, baseDelayMs: 50, maxDelayMs: 50 }, async () => {
    throw chainError('VLM_CHAIN_UNAVAILABLE', 'unavailable', 'down');
  }, controller.signal);
  setTimeout(() => controller.abort(), 20);
  await rejectsCode(t, pending, 'VLM_CHAIN_ABORTED', 'unavailable');
});

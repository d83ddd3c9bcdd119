/**
 * Hardhat 3 configuration: compiles `contracts/` with solc 0.8.28 taken from the npm `solc`
 * package (its WebAssembly build), so `npm run compile` and every test work offline — Hardhat
 * never downloads a compiler when `path` is set. The same object is what the embedded chain
 * and the contract tests pass to `createHardhatRuntimeEnvironment(config, {}, projectRoot)`.
 */
import { createRequire } from 'node:module';
import hardhatEthers from '@nomicfoundation/hardhat-ethers';
import { defineConfig } from 'hardhat/config';

const require = createRequire(import.meta.url);

/** Where the compiler lives: the `solc` package's WebAssembly build (no download). */
export const SOLC_PATH: string = require.resolve('solc/soljson.js');

export default defineConfig({
  plugins: [hardhatEthers],
  solidity: {
    version: '0.8.28',
    path: SOLC_PATH,
    settings: {
      // Cancun is solc 0.8.28's default; pinned so the bytecode (and its gas) cannot drift
      // with a compiler default. Every production chain we target (Besu, Geth) supports it.
      evmVersion: 'cancun',
      // `anchor` runs once per batch for the contract's whole life: optimise for calls, not
      // for deployment size.
      optimizer: { enabled: true, runs: 10_000 },
    },
  },
});

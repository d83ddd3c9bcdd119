/**
 * Helpers for the ConsentRegistry tests: deployment on the in-process chain, keys, rules,
 * `decide` as names, event extraction, and EIP-712 signing through src/chain/consent-registry.ts.
 */
import { id as keccakText, type BaseWallet, type Contract, type Signer } from 'ethers';
import { DECISIONS, consentTypedData, type GrantMessage, type RevokeMessage, type Rule } from '../../src/chain/consent-registry.ts';
import type { TestChain } from './chain.ts';

export const ZERO32 = `0x${'00'.repeat(32)}`;
export const ZERO_ADDRESS = `0x${'00'.repeat(20)}`;

/** A keyed pseudonym stand-in: keccak256 of a reference. */
export const key = (reference: string): string => keccakText(reference);

/** Bit i of a mask. */
export const bit = (i: number): bigint => 1n << BigInt(i);

/** A rule: permit any actor, everything, unbounded; `over` overrides. */
export const rule = (over: Partial<Rule> = {}): Rule => ({
  permit: true,
  actors: [],
  classes: 0n,
  actions: 0,
  purposes: 0n,
  start: 0,
  end: 0,
  ...over,
});

/** `registry` as seen by `signer` (ethers' `connect` loses the method typing). */
export const as = (registry: Contract, signer: Signer): Contract => registry.connect(signer) as Contract;

/** Deploys ConsentRegistry with signer 0 as administrator and signer 1 as custodian (and approver). */
export async function deployConsentRegistry(chain: TestChain) {
  const [admin, custodian, ...others] = await chain.ethers.getSigners();
  const registry = await chain.ethers.deployContract('ConsentRegistry', [admin!.address, custodian!.address], admin!);
  await registry.waitForDeployment();
  const address = await registry.getAddress();
  const chainId = (await chain.ethers.provider.getNetwork()).chainId;
  const asCustodian = as(registry, custodian!);
  const call = (name: string) => asCustodian.getFunction(name);
  /** Sends a custodian transaction and waits for its receipt. */
  const send = async (name: string, ...args: unknown[]) => (await call(name)(...args)).wait();
  const decide = async (patient: string, actors: string[], cls: number, action: number, purpose: number, time = 1_000_000): Promise<[string, string | undefined]> => {
    const [decision, consentId] = await registry.getFunction('decide')(patient, actors, cls, action, purpose, time);
    return [DECISIONS[Number(decision)]!, consentId === ZERO32 ? undefined : consentId];
  };
  const signRevoke = (wallet: BaseWallet, message: RevokeMessage, domain: { chainId?: bigint; contract?: string } = {}) => {
    const td = consentTypedData(domain.chainId ?? chainId, domain.contract ?? address, 'Revoke', message);
    return wallet.signTypedData(td.domain, td.types, td.message);
  };
  const signGrant = (wallet: BaseWallet, message: GrantMessage, domain: { chainId?: bigint; contract?: string } = {}) => {
    const td = consentTypedData(domain.chainId ?? chainId, domain.contract ?? address, 'Grant', message);
    return wallet.signTypedData(td.domain, td.types, td.message);
  };
  return { registry, address, chainId, admin: admin!, custodian: custodian!, others, call, send, decide, signRevoke, signGrant };
}

export type ConsentFixture = Awaited<ReturnType<typeof deployConsentRegistry>>;

/** The registry events in `receipt`, as `[name, ...args as strings]`. */
export function eventsOf(registry: Contract, receipt: { logs: { topics: readonly string[]; data: string }[] }): string[][] {
  return receipt.logs
    .map((log) => registry.interface.parseLog({ topics: [...log.topics], data: log.data }))
    .filter((e): e is NonNullable<typeof e> => e !== null)
    .map((e) => [e.name, ...[...e.args].map((a) => String(a))]);
}

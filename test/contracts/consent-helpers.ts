/**
 * Helpers for the ConsentRegistry tests: deployment on the in-process chain, keys and data
 * tokens, rules, `decide` as names, event extraction, and EIP-712 signing through
 * src/chain/consent-registry.ts.
 */
import { id as keccakText, type BaseWallet, type Contract, type Signer } from 'ethers';
import { DECISIONS, consentTypedData, type GrantMessage, type RevokeMessage, type Rule } from '../../src/chain/consent-registry.ts';
import type { TestChain } from './chain.ts';

export const ZERO32 = `0x${'00'.repeat(32)}`;
export const ZERO_ADDRESS = `0x${'00'.repeat(20)}`;

/** A keyed pseudonym stand-in: keccak256 of a reference. */
export const key = (reference: string): string => keccakText(reference);

/** A data token of `kind` (its first byte; any 0..255 here, so bad kinds can be tried): keccak256 of `reference`, first byte replaced. */
export const token = (kind: number, reference: string): string => `0x${kind.toString(16).padStart(2, '0')}${keccakText(reference).slice(4)}`;

/** Bit i of a mask. */
export const bit = (i: number): bigint => 1n << BigInt(i);

/** The mask of purposes (or classes) `indexes`. */
export const mask = (...indexes: number[]): bigint => indexes.reduce((m, i) => m | bit(i), 0n);

/** A rule: nested in the root, permit any actor, everything, unbounded, no data condition; `over` overrides. */
export const rule = (over: Partial<Rule> = {}): Rule => ({
  parent: 0,
  permit: true,
  actors: [],
  classes: 0n,
  actions: 0,
  purposes: 0n,
  start: 0,
  end: 0,
  dataStart: 0,
  dataEnd: 0,
  tokens: [],
  ...over,
});

/** `registry` as seen by `signer` (ethers' `connect` loses the method typing). */
export const as = (registry: Contract, signer: Signer): Contract => registry.connect(signer) as Contract;

/** The contract's `Request`, as ethers encodes a tuple from an object. */
export interface RequestTuple {
  patient: string;
  actors: string[];
  resourceClass: number;
  action: number;
  purposes: bigint;
  time: number;
  dataTime: number;
  facts: string[];
}

/** What a request carries beyond patient, actors, class, action and purposes. */
export interface RequestExtras {
  time?: number;
  dataTime?: number;
  facts?: string[];
}

/** A `Request` tuple (time 1,000,000, dataTime 0, no facts unless given). */
export const request = (patient: string, actors: string[], resourceClass: number, action: number, purposes: bigint, extras: RequestExtras = {}): RequestTuple => ({
  patient,
  actors,
  resourceClass,
  action,
  purposes,
  time: extras.time ?? 1_000_000,
  dataTime: extras.dataTime ?? 0,
  facts: extras.facts ?? [],
});

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
  /** `decide` of a Request tuple, as `[decision name, consent id or undefined]`. */
  const decideRequest = async (req: RequestTuple): Promise<[string, string | undefined]> => {
    const [decision, consentId] = await registry.getFunction('decide')(req);
    return [DECISIONS[Number(decision)]!, consentId === ZERO32 ? undefined : consentId];
  };
  /** `decide` for the purposes mask `purposes`, at `time`, with `extras` (dataTime, facts). */
  const decide = async (
    patient: string,
    actors: string[],
    cls: number,
    action: number,
    purposes: bigint,
    time = 1_000_000,
    extras: Omit<RequestExtras, 'time'> = {},
  ): Promise<[string, string | undefined]> => decideRequest(request(patient, actors, cls, action, purposes, { ...extras, time }));
  const isPermitted = async (req: RequestTuple): Promise<boolean> => registry.getFunction('isPermitted')(req);
  const signRevoke = (wallet: BaseWallet, message: RevokeMessage, domain: { chainId?: bigint; contract?: string } = {}) => {
    const td = consentTypedData(domain.chainId ?? chainId, domain.contract ?? address, 'Revoke', message);
    return wallet.signTypedData(td.domain, td.types, td.message);
  };
  const signGrant = (wallet: BaseWallet, message: GrantMessage, domain: { chainId?: bigint; contract?: string } = {}) => {
    const td = consentTypedData(domain.chainId ?? chainId, domain.contract ?? address, 'Grant', message);
    return wallet.signTypedData(td.domain, td.types, td.message);
  };
  return { registry, address, chainId, admin: admin!, custodian: custodian!, others, call, send, decide, decideRequest, isPermitted, signRevoke, signGrant };
}

export type ConsentFixture = Awaited<ReturnType<typeof deployConsentRegistry>>;

/** The registry events in `receipt`, as `[name, ...args as strings]`. */
export function eventsOf(registry: Contract, receipt: { logs: { topics: readonly string[]; data: string }[] }): string[][] {
  return receipt.logs
    .map((log) => registry.interface.parseLog({ topics: [...log.topics], data: log.data }))
    .filter((e): e is NonNullable<typeof e> => e !== null)
    .map((e) => [e.name, ...[...e.args].map((a) => String(a))]);
}

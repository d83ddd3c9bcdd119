/**
 * ConsentRegistry's calldata, results, logs, revert errors and EIP-712 typed data, encoded and
 * decoded with ethers' ABI coder from the generated ABI (`generated/consent-registry.ts`). Pure
 * functions: no provider, no I/O. The contract is documented in `contracts/IConsentRegistry.sol`
 * and the design in `docs/consent.md`.
 *
 * Conventions: keys (consent ids, patients, actors) are `0x`-prefixed 32-byte hex strings,
 * lowercased on the way out; `classes` and `purposes` masks are bigints; everything else that
 * fits a JavaScript number is a number.
 */
import { AbiCoder, Interface, TypedDataEncoder, getAddress, id as keccakText, type TypedDataField } from 'ethers';
import { ChainError, chainError } from './errors.ts';
import {
  CONSENT_REGISTRY_ABI,
  CONSENT_REGISTRY_BYTECODE,
  CONSENT_REGISTRY_INTERFACE_ID,
} from './generated/consent-registry.ts';
import type { RpcLog } from './rpc.ts';

const registry = new Interface(CONSENT_REGISTRY_ABI);

/**
 * One provision of a consent (`IConsentRegistry.Rule`): `rules[0]` is the root, every other rule
 * is nested in `rules[parent]` (parent < its index), to any depth.
 */
export interface Rule {
  /** Index of the enclosing rule (0 for the root). */
  parent: number;
  /** provision.type (the root's: its own, else the base policy's): permit (true) or deny (false). */
  permit: boolean;
  /** Recipient actor keys (≤ 8); empty = any actor. */
  actors: string[];
  /** Bit i = R4 resource type i, or'ed with class tokens; 0n and no class token = every class. */
  classes: bigint;
  /** Bit i = action i (access, collect, use, disclose, correct); 0 = all. */
  actions: number;
  /** Bit i = PurposeOfUse i; 0n = all. */
  purposes: bigint;
  /** When the rule is in force: unix seconds, inclusive; 0 = unbounded. */
  start: number;
  end: number;
  /** When the data was recorded: unix seconds, inclusive; 0 = unbounded. */
  dataStart: number;
  dataEnd: number;
  /** Data tokens (≤ 32): keyed, first byte = kind (TOKEN_KIND). */
  tokens: string[];
}

/** Token kinds: a data token's first byte (`IConsentRegistry`). */
export const TOKEN_KIND = Object.freeze({ custodian: 1, author: 2, class: 3, code: 4, label: 5, data: 6 } as const);
export type TokenKind = keyof typeof TOKEN_KIND;

/** One request to `decide` (`IConsentRegistry.Request`). */
export interface DecideRequest {
  patient: string;
  /** Every identity of the requester (≤ 4). */
  actors: readonly string[];
  resourceClass: number;
  action: number;
  /** Bit i = PurposeOfUse i: the purposes the requester names. */
  purposes: bigint;
  /** Unix seconds. */
  time: number;
  /** When the data was recorded, unix seconds (0: unknown). */
  dataTime: number;
  /** The data's tokens, keyed as the rules' are. */
  facts: readonly string[];
}

/** `IConsentRegistry.Model`, by name; index = the on-chain value. */
export const MODELS = ['opt-in', 'opt-out'] as const;
export type ConsentModel = (typeof MODELS)[number];

/** `IConsentRegistry.Decision`, by name; index = the on-chain value. */
export const DECISIONS = ['NoConsent', 'Permit', 'Deny', 'BreakGlass', 'ActorNotApproved', 'Implied'] as const;
export type ConsentDecision = (typeof DECISIONS)[number];

/** What `decide` answered: the decision and, for Permit and Deny, the consent that decided. */
export interface DecideResult {
  decision: ConsentDecision;
  /** The deciding consent; undefined for BreakGlass, ActorNotApproved, Implied and NoConsent. */
  consentId: string | undefined;
}

/** A consent as the contract holds it. */
export interface ConsentRecord {
  id: string;
  patient: string;
  status: 'active' | 'revoked';
  lockedByPatient: boolean;
  rules: Rule[];
}

/** The purpose index of ETREAT (emergency treatment), on which break-glass turns. */
export const ETREAT = 1;
export const MAX_RULES = 32;
export const MAX_RULE_ACTORS = 8;
export const MAX_RULE_TOKENS = 32;
export const MAX_ACTIVE_CONSENTS = 64;
export const MAX_REQUEST_ACTORS = 4;
/** `keccak256("CUSTODIAN_ROLE")`: mirrors consents, registers wallets, records break-glass. */
export const CUSTODIAN_ROLE: string = keccakText('CUSTODIAN_ROLE');
/** `keccak256("APPROVER_ROLE")`: approves actors. */
export const APPROVER_ROLE: string = keccakText('APPROVER_ROLE');
/** EIP-712 domain name and version of the registry. */
export const CONSENT_DOMAIN_NAME = 'VellumConsentRegistry';
export const CONSENT_DOMAIN_VERSION = '2';

const ZERO32 = `0x${'00'.repeat(32)}`;
const KEY = /^0x[0-9a-fA-F]{64}$/;
const MAX_UINT64 = (1n << 64n) - 1n;
const MAX_UINT256 = (1n << 256n) - 1n;

/** `value` as a lowercase bytes32 key. Raises VLM_CONSENT_BAD_KEY (not 32 bytes of hex, or zero). */
export function consentKey(value: string, what = 'key'): string {
  if (typeof value !== 'string' || !KEY.test(value) || /^0x0{64}$/.test(value)) {
    throw chainError('VLM_CONSENT_BAD_KEY', 'invalid', `${what} must be 0x and 64 hex digits, not zero`);
  }
  return value.toLowerCase();
}

function badRule(index: number, why: string): ChainError {
  return chainError('VLM_CONSENT_BAD_RULE', 'invalid', `rule ${index}: ${why}`);
}

function uintIn(value: unknown, max: bigint): boolean {
  return (typeof value === 'bigint' && value >= 0n && value <= max) || (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 && BigInt(value) <= max);
}

/**
 * Checks `rules` against what the contract can hold (shape, field ranges, counts) and returns
 * them as ABI tuples. Raises VLM_CONSENT_BAD_RULE, VLM_CONSENT_BAD_KEY, VLM_CONSENT_LIMIT.
 * Approval of the actors is the contract's to check.
 */
export function ruleTuples(rules: readonly Rule[]): unknown[] {
  if (!Array.isArray(rules) || rules.length === 0) throw chainError('VLM_CONSENT_BAD_RULE', 'invalid', 'a consent needs at least its root rule');
  if (rules.length > MAX_RULES) throw chainError('VLM_CONSENT_LIMIT', 'invalid', `at most ${MAX_RULES} rules`);
  return rules.map((rule, i) => {
    if (rule === null || typeof rule !== 'object' || typeof rule.permit !== 'boolean') throw badRule(i, 'permit must be a boolean');
    if (!Number.isInteger(rule.parent) || rule.parent < 0 || (i > 0 ? rule.parent >= i : rule.parent !== 0)) throw badRule(i, 'parent must be a rule before it');
    if (!Array.isArray(rule.actors)) throw badRule(i, 'actors must be an array');
    if (rule.actors.length > MAX_RULE_ACTORS) throw chainError('VLM_CONSENT_LIMIT', 'invalid', `rule ${i}: at most ${MAX_RULE_ACTORS} actors`);
    if (!Array.isArray(rule.tokens)) throw badRule(i, 'tokens must be an array');
    if (rule.tokens.length > MAX_RULE_TOKENS) throw chainError('VLM_CONSENT_LIMIT', 'invalid', `rule ${i}: at most ${MAX_RULE_TOKENS} tokens`);
    if (!uintIn(rule.classes, MAX_UINT256)) throw badRule(i, 'classes must be a uint256');
    if (!uintIn(rule.actions, 0xffffn)) throw badRule(i, 'actions must be a uint16');
    if (!uintIn(rule.purposes, MAX_UINT64)) throw badRule(i, 'purposes must be a uint64');
    if (!uintIn(rule.start, MAX_UINT64) || !uintIn(rule.end, MAX_UINT64)) throw badRule(i, 'start and end must be unix seconds ≥ 0');
    if (!uintIn(rule.dataStart, MAX_UINT64) || !uintIn(rule.dataEnd, MAX_UINT64)) throw badRule(i, 'dataStart and dataEnd must be unix seconds ≥ 0');
    const tokens = rule.tokens.map((t: string, j: number) => {
      const key = consentKey(t, `rule ${i} token ${j}`);
      const kind = Number.parseInt(key.slice(2, 4), 16);
      if (kind < 1 || kind > 6) throw badRule(i, `token ${j} is of no known kind`);
      return key;
    });
    return [
      rule.parent,
      rule.permit,
      (rule.actors as string[]).map((a: string, j: number) => consentKey(a, `rule ${i} actor ${j}`)),
      BigInt(rule.classes),
      rule.actions,
      BigInt(rule.purposes),
      rule.start,
      rule.end,
      rule.dataStart,
      rule.dataEnd,
      tokens,
    ];
  });
}

function ruleOf(tuple: readonly unknown[]): Rule {
  const [parent, permit, actors, classes, actions, purposes, start, end, dataStart, dataEnd, tokens] = tuple as [
    bigint, boolean, string[], bigint, bigint, bigint, bigint, bigint, bigint, bigint, string[],
  ];
  return {
    parent: Number(parent),
    permit,
    actors: [...actors].map((a) => a.toLowerCase()),
    classes,
    actions: Number(actions),
    purposes,
    start: Number(start),
    end: Number(end),
    dataStart: Number(dataStart),
    dataEnd: Number(dataEnd),
    tokens: [...tokens].map((t) => t.toLowerCase()),
  };
}

function smallUint(value: number, max: number, what: string): number {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw chainError('VLM_CONSENT_BAD_RULE', 'invalid', `${what} must be a whole number from 0 to ${max}`);
  }
  return value;
}

function requestActors(actors: readonly string[]): string[] {
  if (!Array.isArray(actors)) throw chainError('VLM_CONSENT_BAD_KEY', 'invalid', 'actors must be an array of keys');
  if (actors.length > MAX_REQUEST_ACTORS) throw chainError('VLM_CONSENT_LIMIT', 'invalid', `at most ${MAX_REQUEST_ACTORS} request actors`);
  return actors.map((a, i) => consentKey(a, `actor ${i}`));
}

function unixTime(value: number): number {
  if (!Number.isSafeInteger(value) || value < 0) throw chainError('VLM_CONSENT_BAD_RULE', 'invalid', 'time must be unix seconds ≥ 0');
  return value;
}

function uint256(value: bigint | number, what: string): bigint {
  if (!uintIn(value, MAX_UINT256)) throw chainError('VLM_CONSENT_BAD_RULE', 'invalid', `${what} must be a uint256`);
  return BigInt(value);
}

function signatureHex(signature: string): string {
  if (typeof signature !== 'string' || !/^0x(?:[0-9a-fA-F]{2})*$/.test(signature)) {
    throw chainError('VLM_CONSENT_BAD_SIGNATURE', 'invalid', 'a signature is 0x-prefixed hex');
  }
  return signature;
}

// ------------------------------------------------------------------ deployment and checks

/** Creation bytecode plus constructor arguments: deploys with `admin` and `custodian`. */
export function consentDeploymentData(admin: string, custodian: string): string {
  return CONSENT_REGISTRY_BYTECODE + AbiCoder.defaultAbiCoder().encode(['address', 'address'], [admin, custodian]).slice(2);
}

export function encodeSupportsConsentRegistry(): string {
  return registry.encodeFunctionData('supportsInterface', [CONSENT_REGISTRY_INTERFACE_ID]);
}

export function encodeHasRole(role: string, account: string): string {
  return registry.encodeFunctionData('hasRole', [role, account]);
}

export function decodeConsentBool(fn: 'supportsInterface' | 'hasRole' | 'isPermitted', data: string): boolean {
  return (registry.decodeFunctionResult(fn, data) as unknown as [boolean])[0];
}

// ------------------------------------------------------------------ writes

export function encodePutConsent(id: string, patient: string, rules: readonly Rule[]): string {
  return registry.encodeFunctionData('putConsent', [consentKey(id, 'id'), consentKey(patient, 'patient'), ruleTuples(rules)]);
}

export function encodeRevokeConsent(id: string): string {
  return registry.encodeFunctionData('revokeConsent', [consentKey(id, 'id')]);
}

export function encodeApproveActor(actor: string, emergency: boolean): string {
  return registry.encodeFunctionData('approveActor', [consentKey(actor, 'actor'), emergency === true]);
}

export function encodeRevokeApproval(actor: string): string {
  return registry.encodeFunctionData('revokeApproval', [consentKey(actor, 'actor')]);
}

/** `wallet` null or the zero address unregisters. */
export function encodeRegisterWallet(patient: string, wallet: string | null): string {
  let address = `0x${'00'.repeat(20)}`;
  if (wallet !== null) {
    try {
      address = getAddress(wallet);
    } catch (err) {
      throw chainError('VLM_CONSENT_BAD_KEY', 'invalid', 'wallet must be an address', err);
    }
  }
  return registry.encodeFunctionData('registerWallet', [consentKey(patient, 'patient'), address]);
}

export function encodeRevokeBySig(id: string, nonce: bigint | number, deadline: bigint | number, signature: string): string {
  return registry.encodeFunctionData('revokeBySig', [consentKey(id, 'id'), uint256(nonce, 'nonce'), uint256(deadline, 'deadline'), signatureHex(signature)]);
}

export function encodeGrantBySig(
  id: string,
  patient: string,
  rules: readonly Rule[],
  nonce: bigint | number,
  deadline: bigint | number,
  signature: string,
): string {
  return registry.encodeFunctionData('grantBySig', [
    consentKey(id, 'id'),
    consentKey(patient, 'patient'),
    ruleTuples(rules),
    uint256(nonce, 'nonce'),
    uint256(deadline, 'deadline'),
    signatureHex(signature),
  ]);
}

export function encodeRecordEmergencyAccess(patient: string, actor: string, resourceClass: number, purpose: number): string {
  return registry.encodeFunctionData('recordEmergencyAccess', [
    consentKey(patient, 'patient'),
    consentKey(actor, 'actor'),
    smallUint(resourceClass, 255, 'resourceClass'),
    smallUint(purpose, 255, 'purpose'),
  ]);
}

// ------------------------------------------------------------------ views

/** The `Request` tuple of `decide` / `isPermitted`, checked. */
function requestTuple(request: DecideRequest): unknown[] {
  if (!Array.isArray(request.facts)) throw chainError('VLM_CONSENT_BAD_KEY', 'invalid', 'facts must be an array of keys');
  return [[
    consentKey(request.patient, 'patient'),
    requestActors(request.actors),
    smallUint(request.resourceClass, 255, 'resourceClass'),
    smallUint(request.action, 255, 'action'),
    uint64(request.purposes, 'purposes'),
    unixTime(request.time),
    unixTime(request.dataTime),
    request.facts.map((f, i) => consentKey(f, `fact ${i}`)),
  ]];
}

function uint64(value: bigint | number, what: string): bigint {
  if (!uintIn(value, MAX_UINT64)) throw chainError('VLM_CONSENT_BAD_RULE', 'invalid', `${what} must be a uint64`);
  return BigInt(value);
}

export function encodeDecide(request: DecideRequest): string {
  return registry.encodeFunctionData('decide', requestTuple(request));
}

export function decodeDecide(data: string): DecideResult {
  const [decision, consentId] = registry.decodeFunctionResult('decide', data) as unknown as [bigint, string];
  const name = DECISIONS[Number(decision)];
  if (name === undefined) throw chainError('VLM_CHAIN_BAD_RECEIPT', 'fault', `decide returned an unknown decision ${decision}`);
  return { decision: name, consentId: consentId === ZERO32 ? undefined : consentId.toLowerCase() };
}

export function encodeIsPermitted(request: DecideRequest): string {
  return registry.encodeFunctionData('isPermitted', requestTuple(request));
}

export function encodeSetModel(model: ConsentModel, force: boolean): string {
  const index = MODELS.indexOf(model);
  if (index < 0) throw chainError('VLM_CONSENT_BAD_RULE', 'invalid', 'the model is opt-in or opt-out');
  return registry.encodeFunctionData('setModel', [index, force]);
}

export function encodeModel(): string {
  return registry.encodeFunctionData('model', []);
}

/** `model()`'s answer: the model, and whether it was ever set. */
export function decodeModel(data: string): { model: ConsentModel; set: boolean } {
  const [model, set] = registry.decodeFunctionResult('model', data) as unknown as [bigint, boolean];
  const name = MODELS[Number(model)];
  if (name === undefined) throw chainError('VLM_CHAIN_BAD_RECEIPT', 'fault', `model returned an unknown model ${model}`);
  return { model: name, set };
}

export function encodeRequestAccess(id: string, patient: string, requester: string): string {
  return registry.encodeFunctionData('requestAccess', [consentKey(id, 'id'), consentKey(patient, 'patient'), consentKey(requester, 'requester')]);
}

export function encodeAnswerRequest(id: string, patient: string, approved: boolean): string {
  return registry.encodeFunctionData('answerRequest', [consentKey(id, 'id'), consentKey(patient, 'patient'), approved === true]);
}

export function encodeConsentOf(id: string): string {
  return registry.encodeFunctionData('consentOf', [consentKey(id, 'id')]);
}

/** `consentOf`'s answer for `id`; undefined when the id was never written. */
export function decodeConsentOf(id: string, data: string): ConsentRecord | undefined {
  const [patient, status, lockedByPatient, rules] = registry.decodeFunctionResult('consentOf', data) as unknown as [string, bigint, boolean, unknown[][]];
  if (status === 0n) return undefined;
  return {
    id: id.toLowerCase(),
    patient: patient.toLowerCase(),
    status: status === 1n ? 'active' : 'revoked',
    lockedByPatient,
    rules: rules.map(ruleOf),
  };
}

export function encodeConsentsOf(patient: string): string {
  return registry.encodeFunctionData('consentsOf', [consentKey(patient, 'patient')]);
}

export function decodeConsentsOf(data: string): string[] {
  const [ids] = registry.decodeFunctionResult('consentsOf', data) as unknown as [string[]];
  return [...ids].map((i) => i.toLowerCase());
}

export function encodeApprovalOf(actor: string): string {
  return registry.encodeFunctionData('approvalOf', [consentKey(actor, 'actor')]);
}

export function decodeApprovalOf(data: string): { approved: boolean; emergency: boolean } {
  const [approved, emergency] = registry.decodeFunctionResult('approvalOf', data) as unknown as [boolean, boolean];
  return { approved, emergency };
}

export function encodeWalletOf(patient: string): string {
  return registry.encodeFunctionData('walletOf', [consentKey(patient, 'patient')]);
}

/** The patient's wallet, checksummed; undefined when none is registered. */
export function decodeWalletOf(data: string): string | undefined {
  const [wallet] = registry.decodeFunctionResult('walletOf', data) as unknown as [string];
  return /^0x0{40}$/i.test(wallet) ? undefined : getAddress(wallet);
}

export function encodeNonces(patient: string): string {
  return registry.encodeFunctionData('nonces', [consentKey(patient, 'patient')]);
}

export function decodeNonces(data: string): bigint {
  return (registry.decodeFunctionResult('nonces', data) as unknown as [bigint])[0];
}

// ------------------------------------------------------------------ events

interface EventPosition {
  blockNumber: number;
  logIndex: number;
  txHash: string;
}

/** A decoded registry event, with where it was emitted. */
export type ConsentEvent = EventPosition &
  (
    | { type: 'ConsentPut'; id: string; patient: string; bySignature: boolean }
    | { type: 'ConsentRevoked'; id: string; patient: string; bySignature: boolean }
    | { type: 'ActorApproved'; actor: string; emergency: boolean }
    | { type: 'ActorApprovalRevoked'; actor: string }
    | { type: 'WalletRegistered'; patient: string; wallet: string | undefined }
    | { type: 'EmergencyAccess'; patient: string; actor: string; resourceClass: number; purpose: number }
    | { type: 'AccessRequested'; id: string; patient: string; requester: string }
    | { type: 'AccessRequestAnswered'; id: string; patient: string; approved: boolean }
    | { type: 'ConsentModelSet'; model: ConsentModel; forced: boolean }
  );

export type ConsentEventType = ConsentEvent['type'];

const EVENT_NAMES: readonly ConsentEventType[] = [
  'ConsentPut',
  'ConsentRevoked',
  'ActorApproved',
  'ActorApprovalRevoked',
  'WalletRegistered',
  'EmergencyAccess',
  'AccessRequested',
  'AccessRequestAnswered',
  'ConsentModelSet',
];

/** topic0 of every registry event listed in ConsentEvent (for one `eth_getLogs` filter). */
export const CONSENT_EVENT_TOPICS: readonly string[] = EVENT_NAMES.map((name) => registry.getEvent(name)!.topicHash);
const TOPIC_SET = new Set(CONSENT_EVENT_TOPICS);

function hexNumber(hex: string): number {
  const n = Number.parseInt(hex, 16);
  if (!/^0x[0-9a-fA-F]+$/.test(hex) || !Number.isSafeInteger(n)) throw chainError('VLM_CHAIN_BAD_RECEIPT', 'fault', 'the node returned a malformed quantity');
  return n;
}

/** The registry event in `log`, if `log` is one emitted by `contract` (removed logs: undefined). */
export function parseConsentEvent(log: RpcLog, contract: string): ConsentEvent | undefined {
  if (log.removed || !TOPIC_SET.has(log.topics[0] ?? '') || getAddress(log.address) !== getAddress(contract)) return undefined;
  const parsed = registry.parseLog({ topics: log.topics, data: log.data });
  if (!parsed) return undefined;
  const at: EventPosition = { blockNumber: hexNumber(log.blockNumber), logIndex: hexNumber(log.logIndex), txHash: log.transactionHash };
  const a = parsed.args;
  const key = (i: number): string => (a[i] as string).toLowerCase();
  switch (parsed.name as ConsentEventType) {
    case 'ConsentPut':
      return { ...at, type: 'ConsentPut', id: key(0), patient: key(1), bySignature: a[2] as boolean };
    case 'ConsentRevoked':
      return { ...at, type: 'ConsentRevoked', id: key(0), patient: key(1), bySignature: a[2] as boolean };
    case 'ActorApproved':
      return { ...at, type: 'ActorApproved', actor: key(0), emergency: a[1] as boolean };
    case 'ActorApprovalRevoked':
      return { ...at, type: 'ActorApprovalRevoked', actor: key(0) };
    case 'WalletRegistered': {
      const wallet = a[1] as string;
      return { ...at, type: 'WalletRegistered', patient: key(0), wallet: /^0x0{40}$/i.test(wallet) ? undefined : getAddress(wallet) };
    }
    case 'EmergencyAccess':
      return { ...at, type: 'EmergencyAccess', patient: key(0), actor: key(1), resourceClass: Number(a[2]), purpose: Number(a[3]) };
    case 'AccessRequested':
      return { ...at, type: 'AccessRequested', id: key(0), patient: key(1), requester: key(2) };
    case 'AccessRequestAnswered':
      return { ...at, type: 'AccessRequestAnswered', id: key(0), patient: key(1), approved: a[2] as boolean };
    case 'ConsentModelSet':
      return { ...at, type: 'ConsentModelSet', model: MODELS[Number(a[0])] ?? 'opt-in', forced: a[1] as boolean };
    default:
      return undefined;
  }
}

// ------------------------------------------------------------------ revert errors

/** The registry's custom error in revert `data`: its name and arguments; undefined if not one. */
export function parseConsentError(data: string | undefined): { name: string; args: unknown[] } | undefined {
  if (data === undefined) return undefined;
  try {
    const parsed = registry.parseError(data);
    return parsed ? { name: parsed.name, args: [...parsed.args] } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The ChainError for revert data of a registry call: the registry's custom errors by name
 * (`VLM_CONSENT_*`, category 'invalid'; a missing role is VLM_CONSENT_NOT_AUTHORIZED, 'fault'),
 * or undefined when the data is not one of them.
 */
export function consentRevertError(data: string | undefined, cause: unknown): ChainError | undefined {
  const error = parseConsentError(data);
  if (!error) return undefined;
  const arg = (i: number): string => String(error.args[i]).toLowerCase();
  switch (error.name) {
    case 'AccessControlUnauthorizedAccount':
      return chainError('VLM_CONSENT_NOT_AUTHORIZED', 'fault', `${String(error.args[0])} lacks role ${arg(1)} on the consent registry`, cause);
    case 'ConsentLockedByPatient':
      return chainError('VLM_CONSENT_LOCKED', 'invalid', `consent ${arg(0)} was revoked by its patient; only the patient can grant it again`, cause);
    case 'ConsentModelChange':
      return chainError('VLM_CONSENT_MODEL_CHANGE', 'invalid', `the registry's consent model is already set (${MODELS[Number(error.args[0])]}); only a forced change replaces it`, cause);
    case 'ConsentPatientMismatch':
      return chainError('VLM_CONSENT_PATIENT_MISMATCH', 'invalid', `consent ${arg(0)} belongs to another patient`, cause);
    case 'ConsentUnknown':
      return chainError('VLM_CONSENT_UNKNOWN', 'invalid', `consent ${arg(0)} is unknown to the registry`, cause);
    case 'ConsentBadSignature':
      return chainError('VLM_CONSENT_BAD_SIGNATURE', 'invalid', "the signature is not the patient's wallet's", cause);
    case 'ConsentNoWallet':
      return chainError('VLM_CONSENT_BAD_SIGNATURE', 'invalid', `patient ${arg(0)} has no registered wallet`, cause);
    case 'ConsentSignatureExpired':
      return chainError('VLM_CONSENT_EXPIRED', 'invalid', `the signature expired at ${arg(0)}`, cause);
    case 'ConsentBadNonce':
      return chainError('VLM_CONSENT_BAD_NONCE', 'invalid', `the signature carries nonce ${arg(1)}, the patient's next is ${arg(0)}`, cause);
    case 'ConsentTooManyRules':
    case 'ConsentTooManyActors':
    case 'ConsentTooManyTokens':
    case 'ConsentTooManyConsents':
    case 'ConsentTooManyRequestActors':
      return chainError('VLM_CONSENT_LIMIT', 'invalid', `the registry refused: ${error.name}`, cause);
    case 'ConsentNoRules':
    case 'ConsentBadRule':
      return chainError('VLM_CONSENT_BAD_RULE', 'invalid', `the registry refused the rules: ${error.name}`, cause);
    case 'ConsentZeroKey':
      return chainError('VLM_CONSENT_BAD_KEY', 'invalid', 'a key must not be zero', cause);
    case 'ConsentRegistryZeroAdmin':
      return chainError('VLM_CHAIN_BAD_OPTION', 'invalid', 'the consent registry needs an administrator', cause);
    default:
      return undefined;
  }
}

// ------------------------------------------------------------------ EIP-712

/** The EIP-712 types of the registry's signed messages (without EIP712Domain). */
export const CONSENT_TYPES: Record<'Revoke' | 'Grant', Record<string, TypedDataField[]>> = {
  Revoke: {
    Revoke: [
      { name: 'consentId', type: 'bytes32' },
      { name: 'nonce', type: 'uint256' },
      { name: 'deadline', type: 'uint256' },
    ],
  },
  Grant: {
    Grant: [
      { name: 'consentId', type: 'bytes32' },
      { name: 'patient', type: 'bytes32' },
      { name: 'rules', type: 'Rule[]' },
      { name: 'nonce', type: 'uint256' },
      { name: 'deadline', type: 'uint256' },
    ],
    Rule: [
      { name: 'parent', type: 'uint8' },
      { name: 'permit', type: 'bool' },
      { name: 'actors', type: 'bytes32[]' },
      { name: 'classes', type: 'uint256' },
      { name: 'actions', type: 'uint16' },
      { name: 'purposes', type: 'uint64' },
      { name: 'start', type: 'uint64' },
      { name: 'end', type: 'uint64' },
      { name: 'dataStart', type: 'uint64' },
      { name: 'dataEnd', type: 'uint64' },
      { name: 'tokens', type: 'bytes32[]' },
    ],
  },
};

export interface RevokeMessage {
  consentId: string;
  nonce: bigint | number;
  deadline: bigint | number;
}

export interface GrantMessage extends RevokeMessage {
  patient: string;
  rules: Rule[];
}

export interface ConsentTypedData {
  domain: { name: string; version: string; chainId: bigint; verifyingContract: string };
  types: Record<string, TypedDataField[]>;
  primaryType: 'Revoke' | 'Grant';
  message: Record<string, unknown>;
}

/**
 * The typed data a patient's wallet signs for `revokeBySig` / `grantBySig` on registry
 * `contract` of chain `chainId`: `wallet.signTypedData(td.domain, td.types, td.message)`.
 * Raises VLM_CONSENT_BAD_KEY / _BAD_RULE / _LIMIT for a message the contract could not take.
 */
export function consentTypedData(chainId: number | bigint, contract: string, kind: 'Revoke', message: RevokeMessage): ConsentTypedData;
export function consentTypedData(chainId: number | bigint, contract: string, kind: 'Grant', message: GrantMessage): ConsentTypedData;
export function consentTypedData(
  chainId: number | bigint,
  contract: string,
  kind: 'Revoke' | 'Grant',
  message: RevokeMessage | GrantMessage,
): ConsentTypedData {
  const domain = { name: CONSENT_DOMAIN_NAME, version: CONSENT_DOMAIN_VERSION, chainId: BigInt(chainId), verifyingContract: getAddress(contract) };
  const base = { consentId: consentKey(message.consentId, 'consentId'), nonce: uint256(message.nonce, 'nonce'), deadline: uint256(message.deadline, 'deadline') };
  if (kind === 'Revoke') return { domain, types: CONSENT_TYPES.Revoke, primaryType: 'Revoke', message: base };
  const grant = message as GrantMessage;
  const rules = ruleTuples(grant.rules).map((tuple) => {
    const [parent, permit, actors, classes, actions, purposes, start, end, dataStart, dataEnd, tokens] = tuple as [
      number, boolean, string[], bigint, number, bigint, number, number, number, number, string[],
    ];
    return { parent, permit, actors, classes, actions, purposes, start, end, dataStart, dataEnd, tokens };
  });
  return {
    domain,
    types: CONSENT_TYPES.Grant,
    primaryType: 'Grant',
    message: { consentId: base.consentId, patient: consentKey(grant.patient, 'patient'), rules, nonce: base.nonce, deadline: base.deadline },
  };
}

/** The EIP-712 digest the contract recovers the signer from (for checks and tests). */
export function consentDigest(td: ConsentTypedData): string {
  return TypedDataEncoder.hash(td.domain, td.types, td.message);
}

export { CONSENT_REGISTRY_INTERFACE_ID };

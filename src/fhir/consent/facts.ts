/**
 * The facts of a resource a consent's data conditions are checked against (docs/consent.md
 * §Data conditions), as keyed tokens (terms.ts `tokenKeyer`), and when its data was recorded.
 *
 * - custodian: the organisation that holds the data — `meta.source` ending in
 *   `Organization/{id}` (`http://ehr.example/fhir/Organization/o1`, `urn:x#Organization/o1`,
 *   `Organization/o1`), and a top-level `custodian` reference (Composition, DocumentReference);
 * - author: the top-level `author`, `recorder`, `asserter`, `requester`, `performer`, `enterer`
 *   and `sender` references (and their `.actor`);
 * - class: `meta.profile` (canonical URL, version dropped) and content types (`contentType` of
 *   Binary, attachments of DocumentReference, Media, DiagnosticReport.presentedForm);
 * - code: the codings of the top-level `code`, `type`, `medicationCodeableConcept` and
 *   `vaccineCode`;
 * - label: `meta.security`; a resource without a v3-Confidentiality label is normal (N);
 * - data: the resource itself (instance, related, dependents), the resources it references
 *   (dependents: it depends on them) and its authors (authoredby);
 * - data time: its clinical date (effective, issued, recorded, onset, performed, authoredOn,
 *   occurrence, date, period, created, sent…), else when the version was written.
 */
import { dateRange } from '../dates.ts';
import type { TokenKind } from './terms.ts';

export interface DataFacts {
  tokens: ReadonlySet<string>;
  /** Unix seconds. */
  dataTime: number;
}

const CONFIDENTIALITY = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const ORGANIZATION_AT_END = /(?:^|[/#])(Organization\/[A-Za-z0-9\-.]{1,64})$/;
const RELATIVE = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[A-Za-z0-9\-.]{1,64})?$/;
const AUTHOR_ELEMENTS = ['author', 'recorder', 'asserter', 'requester', 'performer', 'enterer', 'sender'];
const CODE_ELEMENTS = ['code', 'type', 'medicationCodeableConcept', 'vaccineCode'];
const TIME_ELEMENTS = [
  'effectiveDateTime', 'effectiveInstant', 'effectivePeriod', 'issued', 'recordedDate', 'recorded', 'onsetDateTime', 'onsetPeriod',
  'performedDateTime', 'performedPeriod', 'authoredOn', 'occurrenceDateTime', 'occurrencePeriod', 'date', 'period', 'created', 'sent', 'start',
];

type Json = Record<string, unknown>;

/** The facts of `resource` (a version written at `lastUpdated` ms). */
export function factsOf(resource: Json, lastUpdated: number, tokenOf: (kind: TokenKind, value: string) => string): DataFacts {
  const tokens = new Set<string>();
  const self = `${String(resource['resourceType'])}/${String(resource['id'])}`;
  const meta = isObject(resource['meta']) ? resource['meta'] : {};

  const source = meta['source'];
  const custodianFromSource = typeof source === 'string' ? ORGANIZATION_AT_END.exec(source) : null;
  if (custodianFromSource) tokens.add(tokenOf('custodian', custodianFromSource[1]!));
  const custodian = relative(resource['custodian']);
  if (custodian) tokens.add(tokenOf('custodian', custodian));

  for (const element of AUTHOR_ELEMENTS) {
    for (const value of arrayOf(resource[element])) {
      const ref = relative(value) ?? (isObject(value) ? relative(value['actor']) : undefined);
      if (ref) {
        tokens.add(tokenOf('author', ref));
        tokens.add(tokenOf('data', `authoredby|${ref}`));
      }
    }
  }

  for (const profile of arrayOf(meta['profile'])) if (typeof profile === 'string') tokens.add(tokenOf('class', `profile|${profile.split('|')[0]}`));
  const contentTypes: unknown[] = [resource['contentType']];
  for (const c of arrayOf(resource['content'])) contentTypes.push(isObject(c) ? (isObject(c['attachment']) ? c['attachment']['contentType'] : c['contentType']) : undefined);
  for (const f of arrayOf(resource['presentedForm'])) contentTypes.push(isObject(f) ? f['contentType'] : undefined);
  for (const type of contentTypes) if (typeof type === 'string' && type !== '') tokens.add(tokenOf('class', `mime|${type.split(';')[0]!.trim().toLowerCase()}`));

  for (const element of CODE_ELEMENTS) {
    for (const cc of arrayOf(resource[element])) {
      for (const c of isObject(cc) ? arrayOf(cc['coding']) : []) {
        if (isObject(c) && typeof c['system'] === 'string' && typeof c['code'] === 'string') tokens.add(tokenOf('code', `${c['system']}|${c['code']}`));
      }
    }
  }

  let confidentiality = false;
  for (const c of arrayOf(meta['security'])) {
    if (isObject(c) && typeof c['system'] === 'string' && typeof c['code'] === 'string') {
      tokens.add(tokenOf('label', `${c['system']}|${c['code']}`));
      if (c['system'] === CONFIDENTIALITY) confidentiality = true;
    }
  }
  if (!confidentiality) tokens.add(tokenOf('label', `${CONFIDENTIALITY}|N`));

  for (const meaning of ['instance', 'related', 'dependents']) tokens.add(tokenOf('data', `${meaning}|${self}`));
  for (const ref of references(resource)) if (ref !== self) tokens.add(tokenOf('data', `dependents|${ref}`));

  return { tokens, dataTime: dataTimeOf(resource, lastUpdated) };
}

/** Every relative reference `resource` holds (extensions and contained resources included). */
export function references(resource: unknown): Set<string> {
  const out = new Set<string>();
  const walk = (v: unknown) => {
    if (Array.isArray(v)) {
      for (const item of v) walk(item);
    } else if (isObject(v)) {
      for (const [key, value] of Object.entries(v)) {
        if (key === 'reference' && typeof value === 'string') {
          const m = RELATIVE.exec(value);
          if (m) out.add(`${m[1]}/${m[2]}`);
        } else if (typeof value === 'object') {
          walk(value);
        }
      }
    }
  };
  walk(resource);
  return out;
}

function dataTimeOf(resource: Json, lastUpdated: number): number {
  for (const element of TIME_ELEMENTS) {
    const v = resource[element];
    const text = typeof v === 'string' ? v : isObject(v) && typeof v['start'] === 'string' ? v['start'] : undefined;
    const range = text ? dateRange(text) : undefined;
    if (range) return Math.max(0, Math.floor(range.low / 1000));
  }
  return Math.max(0, Math.floor(lastUpdated / 1000));
}

function relative(value: unknown): string | undefined {
  const ref = isObject(value) ? value['reference'] : undefined;
  const m = typeof ref === 'string' ? RELATIVE.exec(ref) : null;
  return m ? `${m[1]}/${m[2]}` : undefined;
}

function arrayOf(value: unknown): unknown[] {
  if (value === undefined || value === null) return [];
  return Array.isArray(value) ? value : [value];
}

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The composition root: builds every store and component from the configuration and wires them
 * into one Fastify app. Nothing else constructs backends.
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import Fastify, { LogController, type FastifyInstance } from 'fastify';
import { ConfigError, type Config } from './config.ts';
import { loadResourceDefinitions } from './fhir/definitions.ts';
import { fhirPlugin, sendError } from './fhir/http.ts';
import { fhirError } from './fhir/errors.ts';
import { parseExact } from './fhir/json.ts';
import { addConsentOperations, buildCapabilityStatement } from './fhir/interactions/capabilities.ts';
import { CURSOR_KEY_PURPOSE } from './fhir/interactions/paging.ts';
import type { FhirResource } from './fhir/request.ts';
import { fhirRoutes } from './fhir/routes.ts';
import { ConsentService } from './fhir/consent/service.ts';
import { consentWriteStep, mappingContext, reflect } from './fhir/consent/write-step.ts';
import { references as references_of } from './fhir/consent/facts.ts';
import { ConsentIntentJournal, reconcileConsents } from './fhir/consent/reconcile.ts';
import type { ConsentLedger } from './chain/consent-ledger.ts';
import { createExtractor } from './fhir/search/extract.ts';
import { createSearchRegistry, supportedSearchParams } from './fhir/search/registry.ts';
import type { FhirServices } from './fhir/services.ts';
import { R4_RESOURCE_TYPES } from './fhir/validation/resource-types.ts';
import { createValidator } from './fhir/validation/validator.ts';
import { Writer } from './fhir/writer.ts';
import { accessWriteStep } from './fhir/access.ts';
import { AuditTrail, type AuditInput } from './fhir/audit.ts';
import { ExportRunner } from './fhir/bulk/runner.ts';
import { ExportFiles, isRecipientKey } from './fhir/bulk/files.ts';
import { startExportWorker } from './fhir/bulk/worker.ts';
import { SubscriptionService } from './fhir/subscriptions/service.ts';
import { SubscriptionSockets, websocketUrl } from './fhir/subscriptions/websocket.ts';

/** Key purpose of the subscription websocket's binding tokens. */
const SUBSCRIPTION_TOKEN_PURPOSE = 'vellum/v1/subscription-binding-token';
import type { JWK } from 'jose';
import { startAuditWorker } from './fhir/audit-worker.ts';
import { WriteGate } from './storage/write-gate.ts';
import { authPlugin, bearerToken, createAuthVerifier, openEmbeddedAuth, type Principal, type TokenVerifier } from './fhir/auth/index.ts';
import { AnchorBatcher } from './chain/batcher.ts';
import type { Ledger } from './chain/ledger.ts';
import { JweCipher } from './storage/jwe-cipher.ts';
import { KEY_PURPOSE, deriveKey, keyScoper, loadMasterKey } from './storage/keys.ts';
import { Repository } from './storage/repository.ts';
import type { ReferenceRow } from './storage/search-types.ts';
import { openStorage, type StorageLocation } from './storage/open.ts';
import { PgAuthStore } from './storage/postgres/pg-auth-store.ts';
import { PgLease, SUBSCRIPTION_LEASE } from './storage/postgres/pg-lease.ts';
import { SqliteAuditQueue } from './storage/sqlite/audit-queue.ts';

export interface Vellum {
  app: FastifyInstance;
  services: FhirServices;
  /** Stop accepting requests, drain in-flight ones, close storage. */
  close(): Promise<void>;
}

const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** Build a Vellum server (not yet listening) from `config`. */
export async function createVellum(config: Config, options: { logger?: boolean } = {}): Promise<Vellum> {
  await fs.mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  const masterKey = await loadMasterKey({ env: config.masterKey, keyFile: path.join(config.dataDir, 'master.key') });
  // Blocks and index share one SQLite file (one WAL): a block always reaches disk before the index
  // row that points at it, and one group fsync makes both durable.
  // The embedded SQLite file, or PostgreSQL (VELLUM_DATABASE_URL); blocks beside the index unless
  // VELLUM_IPFS_URL names a Kubo / IPFS Cluster (storage/open.ts).
  const storageLocation: StorageLocation = {
    databasePath: path.join(config.dataDir, 'vellum.db'),
    ...(config.databaseUrl ? { databaseUrl: config.databaseUrl, databasePoolMax: config.databasePoolMax } : {}),
    ...(config.ipfsUrl ? { ipfsUrl: config.ipfsUrl } : {}),
  };
  // With the audit converter thread (it writes the same file every round), checkpoints are its job
  // (audit-worker.ts): a checkpoint inside a request's commit would copy and fsync the log on the
  // request thread. Without it, these connections checkpoint as the log grows.
  const { index, blobs, pool } = await openStorage(storageLocation, { groupCommit: true, ...(config.audit ? { autoCheckpoint: 0 } : {}) });
  // The audit converter thread writes the same file: both take turns at the gate (write-gate.ts),
  // so the request thread never sleeps in SQLite's busy handler. PostgreSQL needs no gate.
  const writeGate = config.audit && !pool ? new WriteGate({ priority: true }) : undefined;
  const repository = new Repository({
    blobs,
    index,
    cipher: new JweCipher(masterKey, index.dataKeys),
    locatorKey: config.chain.mode === 'off' ? undefined : deriveKey(masterKey, KEY_PURPOSE.manifestLocator),
    ...(writeGate ? { writeGate } : {}),
  });

  // Parameters is never persisted and has no REST endpoint (http://hl7.org/fhir/R4/parameters.html).
  const resourceTypes = new Set(R4_RESOURCE_TYPES.filter((type) => type !== 'Parameters'));
  const validator = createValidator();
  const registry = createSearchRegistry(R4_RESOURCE_TYPES);
  const extractor = createExtractor(registry, { baseUrl: config.baseUrl });
  const definitions = loadResourceDefinitions(R4_RESOURCE_TYPES);

  const scopeOf = keyScoper(masterKey);
  const keyScope = (resource: FhirResource, rows: readonly { kind: string; param: string }[]): string => {
    if (resource.resourceType === 'Patient') return scopeOf(`Patient/${resource.id}`);
    const params = definitions.patientCompartmentParams(resource.resourceType);
    for (const row of rows) {
      if (row.kind !== 'reference' || !params.includes(row.param)) continue;
      const ref = row as ReferenceRow;
      if (ref.targetType === 'Patient' && ref.targetId) return scopeOf(`Patient/${ref.targetId}`);
    }
    return scopeOf(null);
  };

  // The anchor pipeline: a ledger (embedded chain by default), and the batcher that drains the
  // leaves each write queues in the index.
  const ledger = await openLedger(config);
  const leafKey = ledger ? deriveKey(masterKey, KEY_PURPOSE.leafPseudonym) : undefined;
  const batcher = ledger
    ? new AnchorBatcher({
        queue: index,
        manifests: blobs,
        ledger,
        intervalMs: config.chain.anchorIntervalMs,
        maxLeaves: config.chain.anchorMaxLeaves,
        // Several nodes on one PostgreSQL: one batcher at a time (storage/postgres/pg-lease.ts).
        ...(config.databaseUrl ? { lease: new PgLease(config.databaseUrl) } : {}),
        onError: (err) => app.log.warn({ err: { code: (err as { code?: string }).code } }, 'anchoring round failed; will retry'),
      })
    : undefined;

  /** A consent model replaced by force at this start (audited once the audit trail runs). */
  let modelChange: { from: string; to: string; txHash: string } | undefined;
  // Consent writes interrupted by a crash are put right at the next start (consent/reconcile.ts).
  const consentJournal = new ConsentIntentJournal(path.join(config.dataDir, 'consent-intents.log'));
  /** The references held by the current versions of `references` (a Consent's `related` data). */
  const relatedOf = async (references: readonly string[]): Promise<Map<string, string[]>> => {
    const out = new Map<string, string[]>();
    for (const reference of references) {
      const [type, id] = reference.split('/') as [string, string];
      const record = await index.current(type, id).catch(() => undefined);
      const resource = record && !record.deleted ? await services.loadResource(record) : undefined;
      if (resource) out.set(reference, [...references_of(resource)]);
    }
    return out;
  };
  const consentWriteDeps = {
    consent: () => services.consent?.service,
    patientScope: (reference: string) => scopeOf(reference),
    journal: consentJournal,
    policies: config.consent.policies,
    requestTtlSeconds: config.consent.requestTtlSeconds,
    relatedOf,
    previous: async (id: string, versionId: number) => {
      const record = await index.version('Consent', id, versionId);
      const resource = record && !record.deleted ? await services.loadResource(record) : undefined;
      return resource ? { resource, lastUpdated: record!.lastUpdated } : undefined;
    },
    actorsOf: async (principal: Principal) => (services.consent ? services.consent.actorsOf(principal) : []),
  };
  const consentStep = consentWriteStep(consentWriteDeps);
  // Requests being answered (the subscription dispatcher yields to them).
  let requestsInFlight = 0;
  // R4 Subscriptions: checked on write, matched inside each commit, delivered from the outbox (subscriptions/service.ts).
  const subscriptions: SubscriptionService = new SubscriptionService({
    services: () => services,
    writer: (): Writer => writer,
    policy: { allow: new Set(config.subscriptions.allow) },
    maxFailures: config.subscriptions.maxFailures,
    retryMs: config.subscriptions.retryMs,
    maxPerOwner: config.subscriptions.maxPerOwner,
    payloadMax: config.subscriptions.payloadMax,
    busy: () => requestsInFlight > 1,
    audit: (input) => audit?.record(input) ?? Promise.resolve(),
    onError: (err) => app.log.warn({ err: { code: (err as { code?: string }).code, name: (err as Error)?.name } }, 'subscription delivery failed; will retry'),
    // Several nodes on one PostgreSQL: one delivers the rest-hooks (storage/postgres/pg-lease.ts).
    ...(config.databaseUrl ? { lease: new PgLease(config.databaseUrl, SUBSCRIPTION_LEASE) } : {}),
  });
  const writer: Writer = new Writer({
    leafKey,
    steps: [
      accessWriteStep(() => services),
      consentStep,
      subscriptions.writeStep(),
      ...(batcher ? [{ name: 'anchor', afterCommit: async (written: unknown[]) => batcher.notify(written.length) }] : []),
    ],
    repository,
    validate: (resource, type) => validator.validate(resource, type),
    extract: (resource) => extractor.extract(resource),
    keyScope,
    baseUrl: config.baseUrl,
  });

  const decoder = new TextDecoder();
  const services: FhirServices = {
    repository,
    writer,
    validator,
    registry,
    definitions,
    resourceTypes,
    baseUrl: config.baseUrl,
    cursorKey: deriveKey(masterKey, CURSOR_KEY_PURPOSE),
    subscriptions,
    ...(ledger && batcher && leafKey
      ? {
          anchoring: {
            leafKey,
            chainId: ledger.chainId,
            contract: ledger.contract,
            waitFor: (seq, signal) => batcher.waitFor(seq, signal),
            backlog: () => batcher.backlog(),
            anchoredAt: (root) => ledger.anchoredAt(root),
            verifyLeaf: (root, leaf, proof) => ledger.verifyLeaf(root, leaf, proof),
          },
        }
      : {}),
    async loadBundle(record, signal) {
      return JSON.parse(decoder.decode(await repository.load(record, { signal }))) as FhirResource;
    },
    async loadResource(record, signal) {
      if (record.deleted) return undefined;
      const bundle = parseExact(decoder.decode(await repository.load(record, { signal }))) as {
        entry: { resource: FhirResource }[];
      };
      return bundle.entry[0]!.resource;
    },
  };
  const statement = buildCapabilityStatement(services, (type) => supportedSearchParams(registry, type));

  const app = Fastify({
    bodyLimit: config.bodyLimit,
    logController: new LogController({ disableRequestLogging: true }),
    requestIdHeader: false,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    },
    // Logs carry the route pattern, never the URL: query strings can hold names and identifiers.
    logger:
      options.logger === false
        ? false
        : {
            level: config.logLevel,
            serializers: {
              req: (req) => ({ method: req.method, route: req.routeOptions?.url }),
              res: (res) => ({ status: res.statusCode }),
            },
          },
    routerOptions: { ignoreTrailingSlash: true },
    // Requests arriving while shutting down get a 503 OperationOutcome from the hook below.
    return503OnClosing: false,
    // Errors raised by the router itself (over-long path segment, bad percent-encoding) are
    // OperationOutcomes too, and never echo the URL.
    frameworkErrors: (err, request, reply) => {
      const code = (err as { code?: string }).code;
      if (code === 'FST_ERR_MAX_PARAM_LENGTH' || code === 'FST_ERR_BAD_URL') {
        return sendError(reply, request, fhirError(400, 'invalid', 'VLM_FHIR_BAD_URL', 'The URL is malformed or a path segment is too long'));
      }
      return sendError(reply, request, err);
    },
  });
  let closing = false;
  app.addHook('onRequest', async (request, reply) => {
    requestsInFlight++;
    reply.raw.once('close', () => requestsInFlight--);
    if (closing) {
      reply.header('Connection', 'close');
      return sendError(reply, request, fhirError(503, 'transient', 'VLM_SHUTTING_DOWN', 'The server is shutting down'));
    }
  });
  app.addHook('onSend', async (request, reply) => {
    reply.header('X-Request-Id', request.id);
    // While draining, ask keep-alive clients to close so that shutdown does not wait for them.
    if (closing) reply.header('Connection', 'close');
  });
  app.addHook('onResponse', async (request, reply) => {
    request.log.info(
      { method: request.method, route: request.routeOptions.url ?? null, status: reply.statusCode, ms: Math.round(reply.elapsedTime * 10) / 10 },
      'request',
    );
  });
  app.get('/health', async () => ({ status: 'ok' }));
  // Ready = storage reachable. The chain may be down (writes are then queued): reported, not fatal.
  app.get('/ready', async (_request, reply) => {
    try {
      await index.ping();
      await blobs.has('bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku');
    } catch {
      return reply.code(503).send({ status: 'unavailable' });
    }
    if (!ledger) return { status: 'ready', chain: 'off' };
    const chain = await ledger.ping().then(
      () => 'ok',
      () => 'unavailable',
    );
    return { status: 'ready', chain, anchorBacklog: await index.backlog() };
  });
  // Prometheus text exposition of the anchor backlog (versions written but not yet anchored).
  app.get('/metrics', async (_request, reply) => {
    const lines = ['# HELP vellum_anchor_backlog Resource versions written but not yet anchored on chain.', '# TYPE vellum_anchor_backlog gauge'];
    lines.push(`vellum_anchor_backlog ${ledger ? await index.backlog() : 0}`);
    return reply.type('text/plain; version=0.0.4').send(lines.join('\n') + '\n');
  });
  // SMART authorization: the embedded authorization server (default), an external issuer, or off.
  const embeddedAuth =
    config.auth.mode === 'embedded'
      ? await openEmbeddedAuth({
          dataDir: config.dataDir,
          config: config.auth,
          ...(pool ? { store: new PgAuthStore(pool) } : {}),
          log: { info: (obj, msg) => app.log.info(obj, msg) },
          patientExists: async (id) => {
            const record = await index.current('Patient', id);
            return record !== undefined && !record.deleted;
          },
        })
      : undefined;
  const verifier: TokenVerifier | undefined = embeddedAuth?.verifier ?? createAuthVerifier(config.auth);
  if (verifier) {
    // Verified tokens are remembered until they expire: a client's next call costs no signature check.
    const verified = new Map<string, Principal>();
    services.access = {
      authenticate: async (authorization) => {
        const token = bearerToken(authorization);
        const known = verified.get(token);
        if (known && known.expiresAt * 1000 > Date.now()) return known;
        const principal = await verifier.verify(token);
        if (verified.size >= 10_000) verified.delete(verified.keys().next().value!);
        verified.set(token, principal);
        return principal;
      },
      patientScope: (id) => scopeOf(`Patient/${id}`),
    };
  }
  // Consent enforced by the consent registry (docs/consent.md): for callers a token identifies.
  const consentLedger = (ledger as { consents?: ConsentLedger } | undefined)?.consents;
  let consentService: ConsentService | undefined;
  if (config.consent.enabled && verifier && consentLedger) {
    consentService = new ConsentService({
      chain: consentLedger,
      key: deriveKey(masterKey, KEY_PURPOSE.consentPseudonym),
      freshnessMs: config.consent.freshnessMs,
      pollMs: config.consent.pollMs,
      onSignedChange: async (event) => {
        const fhirId = consentService!.fhirIds.get(event.id);
        if (!fhirId) return;
        await reflect(
          {
            writer,
            index,
            load: async (type, id) => {
              const record = await index.current(type, id);
              return record ? services.loadResource(record) : undefined;
            },
          },
          fhirId,
          event.type === 'ConsentPut',
        );
      },
      onError: (err) => app.log.warn({ err: { code: (err as { code?: string }).code, name: (err as Error)?.name } }, 'consent sync failed; will retry'),
    });
    // The FHIR ids behind the on-chain consent ids this server wrote (for AuditEvents and write-back).
    for (let offset = 0; ; offset += 1_000) {
      const page = await index.search({ resourceType: 'Consent', where: [], sort: [], count: 1_000, offset, wantTotal: false });
      for (const record of page.records) consentService.fhirIds.set(consentService.keyOf(`Consent/${record.id}`), record.id);
      if (page.records.length < 1_000) break;
    }
    await consentService.start();
    // The jurisdiction's consent model is recorded on chain, so a decision can be reproduced from
    // the chain alone. Changing it on an existing deployment needs VELLUM_CONSENT_MODEL_FORCE=1.
    {
      const recorded = await consentLedger.model();
      if (!recorded.set || recorded.model !== config.consent.model) {
        if (recorded.set && !config.consent.forceModel) {
          throw new ConfigError(
            'VELLUM_CONSENT_MODEL',
            `the consent registry records the ${recorded.model} model; set VELLUM_CONSENT_MODEL_FORCE=1 to change it to ${config.consent.model}`,
          );
        }
        const mined = await consentLedger.setModel(config.consent.model, recorded.set);
        await consentService.syncTo(mined.blockNumber);
        if (recorded.set) modelChange = { from: recorded.model, to: config.consent.model, txHash: mined.txHash };
      }
    }
    addConsentOperations(statement, config.consent.model);
    {
      const reconciled = await reconcileConsents({
        service: consentService,
        journal: consentJournal,
        index,
        context: (resource) => mappingContext(consentService!, consentWriteDeps, resource),
        load: async (id) => {
          const record = await index.current('Consent', id);
          return record && !record.deleted ? services.loadResource(record) : undefined;
        },
      });
      if (reconciled.checked) {
        // Counts only: Consent ids are chosen by clients and may say more than they should.
        app.log.info(
          { checked: reconciled.checked, restored: reconciled.restored.length, lockedByPatient: reconciled.lockedByPatient.length, failed: reconciled.failed.length },
          'consent writes interrupted by the last stop were reconciled with the contract',
        );
      }
    }
    const actorCache = new Map<string, { actors: string[]; until: number }>();
    const service = consentService;
    services.consent = {
      service,
      mappingContext: (resource) => mappingContext(service, consentWriteDeps, resource),
      requestTtlSeconds: config.consent.requestTtlSeconds,
      async actorsOf(principal: Principal) {
        const user = principal.fhirUser;
        if (!user) return [];
        const cached = actorCache.get(user);
        if (cached && cached.until > Date.now()) return cached.actors;
        const references = [user];
        // A PractitionerRole acts for its practitioner and its organisation too.
        const role = /^PractitionerRole\/([A-Za-z0-9\-.]{1,64})$/.exec(user);
        if (role) {
          const record = await index.current('PractitionerRole', role[1]!);
          const resource = record && !record.deleted ? await services.loadResource(record) : undefined;
          for (const field of ['practitioner', 'organization']) {
            const ref = (resource?.[field] as { reference?: string } | undefined)?.reference;
            if (ref && /^(Practitioner|Organization)\/[A-Za-z0-9\-.]{1,64}$/.test(ref)) references.push(ref);
          }
        }
        const actors = references.map((ref) => service.keyOf(ref));
        if (actorCache.size >= 10_000) actorCache.clear();
        actorCache.set(user, { actors, until: Date.now() + 60_000 });
        return actors;
      },
    };
  }
  if (embeddedAuth) {
    await app.register(authPlugin, { prefix: new URL(embeddedAuth.urls.issuer).pathname.replace(/\/+$/, ''), ...embeddedAuth.pluginOptions });
    const discovery = embeddedAuth.smartConfiguration();
    app.get('/fhir/.well-known/smart-configuration', async (_request, reply) =>
      reply.header('Access-Control-Allow-Origin', '*').header('Cache-Control', 'public, max-age=300').send(discovery),
    );
    ((statement.rest as Record<string, unknown>[])[0]!).security = embeddedAuth.capabilitySecurity();
  }
  // Its own file: a request's fsync then covers only the small queue records, not the WAL of the
  // index and blocks (where the worker's AuditEvent batches and every write go).
  const auditQueue = config.audit
    ? SqliteAuditQueue.open(path.join(config.dataDir, 'audit-queue.db'), deriveKey(masterKey, KEY_PURPOSE.auditQueue))
    : undefined;
  // Records become AuditEvents on a converter thread (audit-worker.ts): the request thread only
  // queues them, so auditing a read does not cost the read's thread a notarised write.
  const audit = auditQueue
    ? new AuditTrail({
        queue: auditQueue,
        converter: startAuditWorker(
          {
            storage: storageLocation,
            queuePath: path.join(config.dataDir, 'audit-queue.db'),
            masterKey,
            baseUrl: config.baseUrl,
            anchoring: ledger !== undefined,
            batchDelayMs: config.auditBatchMs,
            ...(writeGate ? { writeGate: writeGate.buffer } : {}),
          },
          (failure) => app.log.warn({ err: failure }, 'audit conversion failed; will retry'),
          writeGate,
        ),
        baseUrl: config.baseUrl,
        durability: config.auditDurability,
        exists: async (id) => (await index.current('AuditEvent', id)) !== undefined,
      })
    : undefined;
  if (modelChange) {
    app.log.warn({ from: modelChange.from, to: modelChange.to, transaction: modelChange.txHash }, 'consent model changed by force');
    await audit?.record({
      interaction: 'operation',
      method: 'POST',
      status: 200,
      operation: '$consent-model',
      query: `from=${modelChange.from}&to=${modelChange.to}&transaction=${modelChange.txHash}`,
    });
  }
  // Bulk Data export: jobs in the index, files under the data dir, run between requests (bulk/runner.ts).
  const exportFiles = new ExportFiles(path.join(config.dataDir, 'exports'), deriveKey(masterKey, KEY_PURPOSE.exportFiles));
  const exportEncoder = startExportWorker({
    storage: storageLocation,
    exportsDir: path.join(config.dataDir, 'exports'),
    masterKey,
    anchoring: ledger !== undefined,
  });
  const exportRunner = new ExportRunner({
    services: () => services,
    files: exportFiles,
    encoder: exportEncoder,
    fileMax: config.export.fileMax,
    fileBytes: config.export.fileBytes,
    ttlSeconds: config.export.ttlSeconds,
    ...(audit ? { audit: (input: AuditInput) => audit.record(input) } : {}),
    onError: (err) => app.log.warn({ err: { code: (err as { code?: string }).code, name: (err as Error)?.name } }, 'export job failed'),
  });
  services.bulk = {
    runner: exportRunner,
    files: exportFiles,
    concurrency: config.export.concurrency,
    snapshot: () =>
      writer.exclusive(async () => {
        const seq = await index.lastSeq();
        return { seq, time: writer.snapshotInstant() };
      }),
    patientScope: (id) => scopeOf(`Patient/${id}`),
    recipientKey: async (clientId) => {
      const client = await embeddedAuth?.store.getClient(clientId);
      const key = client?.jwks?.keys.find((k) => isRecipientKey(k));
      return key as JWK | undefined;
    },
  };
  // The subscription websocket (subscriptions/websocket.ts), on the same port as the API.
  const subscriptionSockets = new SubscriptionSockets({
    services: () => services,
    subscriptions,
    path: `${new URL(config.baseUrl).pathname.replace(/\/+$/, '')}/websocket`,
    tokenKey: deriveKey(masterKey, SUBSCRIPTION_TOKEN_PURPOSE),
    maxSockets: config.subscriptions.socketsMax,
  });
  app.server.on('upgrade', subscriptionSockets.upgrade);
  services.subscriptionSockets = { url: websocketUrl(config.baseUrl), bindingToken: (ids) => subscriptionSockets.bindingToken(ids) };
  await app.register(fhirPlugin, {
    prefix: '/fhir',
    services,
    routes: fhirRoutes(statement, { bundleMaxEntries: config.bundleMaxEntries }),
    ...(audit ? { audit } : {}),
  });
  batcher?.start();
  exportRunner.start();
  await subscriptions.start();

  let closed = false;
  return {
    app,
    services,
    ...{ ledger }, // the chain, for bench/consent.ts (sends a patient's revokeBySig from another account)
    async close() {
      if (closed) return;
      closed = true;
      closing = true;
      await subscriptionSockets.close();
      await app.close();
      await subscriptions.close();
      await exportRunner.close();
      await exportEncoder.close();
      await audit?.close();
      await auditQueue?.close();
      await batcher?.stop();
      consentService?.close();
      await ledger?.close();
      await embeddedAuth?.close();
      await repository.close();
    },
  };
}

/** Open the ledger the configuration names (undefined when anchoring is off). */
export async function openLedger(config: Config): Promise<Ledger | undefined> {
  const chain = config.chain;
  if (chain.mode === 'off') return undefined;
  if (chain.mode === 'embedded') {
    const { openEmbeddedLedger } = await import('./chain/embedded-chain.ts');
    return openEmbeddedLedger({ dataDir: config.dataDir });
  }
  const { openRpcLedger } = await import('./chain/rpc-chain.ts');
  const privateKey = chain.privateKey ?? (await fs.readFile(chain.keyFile!, 'utf8')).trim();
  // Deploy on first start and remember the address, so a restart uses the same registry.
  const remembered = path.join(config.dataDir, 'chain-contract.json');
  let contract = chain.contract;
  let consentContract = chain.consentContract;
  let saved: { rpcUrl: string; contract: string; consentContract?: string } | undefined;
  try {
    saved = JSON.parse(await fs.readFile(remembered, 'utf8')) as { rpcUrl: string; contract: string; consentContract?: string };
    if (saved.rpcUrl !== chain.rpcUrl) saved = undefined;
  } catch {
    // first start: deploy below
  }
  contract ??= saved?.contract;
  consentContract ??= saved?.consentContract;
  const ledger = await openRpcLedger({
    rpcUrl: chain.rpcUrl!,
    privateKey: privateKey.startsWith('0x') ? privateKey : `0x${privateKey}`,
    contract,
    deploy: contract === undefined,
    ...(consentContract ? { consentContract } : {}),
    chainId: chain.chainId,
    confirmations: chain.confirmations,
  });
  if (!contract || (ledger.consents && ledger.consents.contract !== consentContract)) {
    const remember = { rpcUrl: chain.rpcUrl, contract: ledger.contract, ...(ledger.consents ? { consentContract: ledger.consents.contract } : {}) };
    await fs.writeFile(remembered, JSON.stringify(remember) + '\n', { mode: 0o600 });
  }
  return ledger;
}

/**
 * The subscription websocket (`[base]/websocket`, advertised in the CapabilityStatement):
 *
 * - **R4** (http://hl7.org/fhir/R4/subscription.html#2.46.7.2): the client sends `bind {id}`, the
 *   server answers `bound {id}` and sends `ping {id}` for each event of that subscription.
 * - **Backport IG**: the client sends `bind-with-token {token}` with a token from
 *   `Subscription/{id}/$get-ws-binding-token`; the server sends the handshake bundle, then
 *   notification and heartbeat bundles as JSON text.
 *
 * Who may bind: `bind {id}` needs the upgrade request to carry the subscription owner's bearer
 * token (or an administrator's) when authorization is on; a binding token stands for the owner
 * that asked for it (a browser cannot set headers on a websocket). Anything else is answered
 * `error {id|command} {code}` and binds nothing. Sockets that stop answering pings are closed.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Principal } from '../auth/verify.ts';
import type { FhirServices } from '../services.ts';
import { ownerKey, type BoundSocket, type SubscriptionService } from './service.ts';

/** How long a binding token is good for (seconds). */
export const BINDING_TOKEN_TTL_S = 300;
const MAX_BOUND_PER_SOCKET = 100;
const PING_INTERVAL_MS = 30_000;

export interface SubscriptionSocketsOptions {
  services: () => FhirServices;
  subscriptions: SubscriptionService;
  /** The path of the websocket (`/fhir/websocket`). */
  path: string;
  /** MAC key of binding tokens. */
  tokenKey: Uint8Array;
  /** Most open sockets (VELLUM_SUBSCRIPTION_SOCKETS_MAX). */
  maxSockets: number;
  now?: () => number;
}

/** The websocket URL of a FHIR base URL (`http://h/fhir` → `ws://h/fhir/websocket`). */
export function websocketUrl(baseUrl: string): string {
  return `${baseUrl.replace(/^http/, 'ws')}/websocket`;
}

export class SubscriptionSockets {
  readonly #o: SubscriptionSocketsOptions;
  readonly #wss: WebSocketServer;
  readonly #pinger: NodeJS.Timeout;

  constructor(options: SubscriptionSocketsOptions) {
    this.#o = options;
    this.#wss = new WebSocketServer({ noServer: true, maxPayload: 8192, clientTracking: true });
    this.#pinger = setInterval(() => this.#ping(), PING_INTERVAL_MS);
    this.#pinger.unref();
  }

  #now(): number {
    return (this.#o.now ?? Date.now)();
  }

  /** Open sockets. */
  get size(): number {
    return this.#wss.clients.size;
  }

  /** A binding token for subscriptions `ids` (already checked to be the caller's). */
  bindingToken(ids: readonly string[]): { token: string; expires: number } {
    const expires = this.#now() + BINDING_TOKEN_TTL_S * 1000;
    const payload = Buffer.from(JSON.stringify({ s: ids, e: expires })).toString('base64url');
    return { token: `${payload}.${this.#mac(payload)}`, expires };
  }

  #mac(payload: string): string {
    return createHmac('sha256', this.#o.tokenKey).update(payload).digest('base64url');
  }

  #readToken(token: string): string[] | undefined {
    const [payload, mac, ...rest] = token.split('.');
    if (!payload || !mac || rest.length) return undefined;
    const want = Buffer.from(this.#mac(payload));
    const got = Buffer.from(mac);
    if (want.length !== got.length || !timingSafeEqual(want, got)) return undefined;
    try {
      const { s, e } = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as { s: unknown; e: unknown };
      if (typeof e !== 'number' || e < this.#now() || !Array.isArray(s) || !s.every((id) => typeof id === 'string')) return undefined;
      return s as string[];
    } catch {
      return undefined;
    }
  }

  /** The `upgrade` listener of the HTTP server: takes the requests for its path, leaves the rest. */
  readonly upgrade = (req: IncomingMessage, socket: Duplex, head: Buffer): void => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== this.#o.path) {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    if (this.#wss.clients.size >= this.#o.maxSockets) {
      socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 60\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    void this.#authenticate(req).then(
      (principal) => this.#wss.handleUpgrade(req, socket, head, (ws) => this.#accept(ws, principal)),
      () => socket.end('HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nWWW-Authenticate: Bearer error="invalid_token"\r\nContent-Length: 0\r\n\r\n'),
    );
  };

  async #authenticate(req: IncomingMessage): Promise<Principal | undefined> {
    const access = this.#o.services().access;
    if (!access || req.headers.authorization === undefined) return undefined;
    return access.authenticate(req.headers.authorization);
  }

  #accept(ws: WebSocket, principal: Principal | undefined): void {
    const unbinders = new Map<string, () => void>();
    // `bound`: how many subscriptions it is bound to — a socket bound to none is closed at the second ping round.
    const alive = { yes: true, idle: 0, bound: () => unbinders.size };
    (ws as WebSocket & { vellumAlive?: typeof alive }).vellumAlive = alive;
    ws.on('pong', () => {
      alive.yes = true;
    });
    const bound: BoundSocket = {
      send: (text) =>
        new Promise<boolean>((resolve) => {
          if (ws.readyState !== ws.OPEN) return resolve(false);
          ws.send(text, (err) => resolve(!err));
        }),
    };
    const bind = (id: string, allowed: boolean): void => {
      const sub = this.#o.subscriptions.live(id);
      if (!allowed || !sub || sub.channel !== 'websocket') {
        ws.send(`error ${id.slice(0, 64)} not-found`);
        return;
      }
      if (unbinders.has(id)) return;
      if (unbinders.size >= MAX_BOUND_PER_SOCKET) {
        ws.send(`error ${id.slice(0, 64)} too-many`);
        return;
      }
      ws.send(`bound ${id}`);
      unbinders.set(id, this.#o.subscriptions.bind(id, bound));
    };
    ws.on('message', (data, isBinary) => {
      const text = isBinary ? '' : data.toString('utf8').trim();
      const [command, argument, ...rest] = text.split(/\s+/);
      if (!argument || rest.length) {
        ws.send(`error ${(command ?? '').slice(0, 32) || 'message'} bad-request`);
        return;
      }
      switch (command) {
        case 'bind':
          bind(argument, this.#mayBind(principal, argument));
          break;
        case 'bind-with-token': {
          const ids = this.#readToken(argument);
          if (!ids) ws.send('error bind-with-token invalid-token');
          else for (const id of ids) bind(id, true);
          break;
        }
        case 'unbind':
          unbinders.get(argument)?.();
          unbinders.delete(argument);
          ws.send(`unbound ${argument.slice(0, 64)}`);
          break;
        default:
          ws.send(`error ${command!.slice(0, 32)} unknown-command`);
      }
    });
    ws.on('close', () => {
      for (const unbind of unbinders.values()) unbind();
      unbinders.clear();
    });
    ws.on('error', () => ws.terminate());
  }

  /** `bind {id}`: the subscription's owner or an administrator (anyone when authorization is off). */
  #mayBind(principal: Principal | undefined, id: string): boolean {
    if (!this.#o.services().access) return true;
    if (!principal) return false;
    return principal.admin || this.#o.subscriptions.ownerOf(id) === ownerKey(principal);
  }

  #ping(): void {
    for (const ws of this.#wss.clients) {
      const alive = (ws as WebSocket & { vellumAlive?: { yes: boolean; idle: number; bound: () => number } }).vellumAlive;
      if (alive && !alive.yes) {
        ws.terminate();
        continue;
      }
      // Bound to nothing for a whole ping period: it holds a slot of VELLUM_SUBSCRIPTION_SOCKETS_MAX for nobody.
      if (alive) alive.idle = alive.bound() === 0 ? alive.idle + 1 : 0;
      if (alive && alive.idle >= 2) {
        ws.close(1008, 'bound to no subscription');
        continue;
      }
      if (alive) alive.yes = false;
      ws.ping();
    }
  }

  async close(): Promise<void> {
    clearInterval(this.#pinger);
    for (const ws of this.#wss.clients) ws.terminate();
    await new Promise<void>((resolve) => this.#wss.close(() => resolve()));
  }
}

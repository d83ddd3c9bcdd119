/**
 * The write gate: who may write to the embedded database next, between the request thread and
 * the audit converter thread (src/fhir/audit-worker.ts), which each hold their own SQLite
 * connections to one file.
 *
 * Why: SQLite lets one connection write at a time, and a connection that finds the file locked
 * waits in its busy handler — sleeping 1, 2, 5, 10… ms inside the call, on the thread that made it.
 * On the request thread that sleep stops the event loop: while the converter committed a batch of
 * AuditEvents, every read and write in flight stood still (measured with the shared workload:
 * about 25 waits of ~15 ms per 6,000 writes, each freezing the whole server — the p99 of every
 * phase). With the gate, each side takes its turn before it touches the file: the request thread
 * waits with `Atomics.waitAsync` (the event loop keeps serving), and the converter yields whenever
 * the request thread is waiting, between commits it keeps short.
 *
 * State, in a SharedArrayBuffer both threads hold: [0] 0 = open, else the holder (1 the request
 * thread, 2 the converter); [1] how many turns the request thread is waiting for. A converter
 * thread that dies holding the gate is released by the request thread (`releaseHeldByOther`).
 */

const HELD = 0;
const WAITING = 1;

/** How long a yielding holder waits at most for the request thread to take its turn (ms). */
const YIELD_MS = 5;

export class WriteGate {
  readonly buffer: SharedArrayBuffer;
  readonly #state: Int32Array;
  /** The request thread's side: its waits are counted, so the other side yields to it. */
  readonly #priority: boolean;
  readonly #me: number;

  /** A new gate (`buffer` omitted), or this thread's side of an existing one. */
  constructor(options: { buffer?: SharedArrayBuffer; priority: boolean }) {
    this.buffer = options.buffer ?? new SharedArrayBuffer(8);
    this.#state = new Int32Array(this.buffer);
    this.#priority = options.priority;
    this.#me = options.priority ? 1 : 2;
  }

  /** Run `fn` holding the gate; other holders wait (asynchronously) until it returns. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    await this.#acquire();
    try {
      return await fn();
    } finally {
      this.#release(this.#me);
    }
  }

  /** Open the gate if the other side holds it (its thread ended mid-turn; SQLite released its lock with its connection). */
  releaseHeldByOther(): void {
    this.#release(this.#me === 1 ? 2 : 1);
  }

  #release(holder: number): void {
    if (Atomics.compareExchange(this.#state, HELD, holder, 0) === holder) Atomics.notify(this.#state, HELD);
  }

  /**
   * Before the other side's next turn: when the request thread is waiting, let it go first (its
   * wait is a client's). Called by the converter between its commits.
   */
  async yieldToPriority(): Promise<void> {
    for (let i = 0; i < 100 && Atomics.load(this.#state, WAITING) > 0; i++) {
      const wait = Atomics.waitAsync(this.#state, WAITING, Atomics.load(this.#state, WAITING), YIELD_MS);
      if (wait.async) await wait.value;
    }
  }

  async #acquire(): Promise<void> {
    if (!this.#priority) await this.yieldToPriority();
    if (this.#priority) Atomics.add(this.#state, WAITING, 1);
    try {
      for (let holder = Atomics.compareExchange(this.#state, HELD, 0, this.#me); holder !== 0; holder = Atomics.compareExchange(this.#state, HELD, 0, this.#me)) {
        const wait = Atomics.waitAsync(this.#state, HELD, holder);
        if (wait.async) await wait.value;
      }
    } finally {
      if (this.#priority) {
        Atomics.sub(this.#state, WAITING, 1);
        Atomics.notify(this.#state, WAITING);
      }
    }
  }
}

/**
 * Work done in rounds, one at a time: `kick` starts a round, or — while one runs — asks for
 * another after it (kicks coalesce). `idle` resolves once no round runs and none is asked for.
 * The export runner and the subscription dispatcher work this way.
 */
export class Rounds {
  readonly #round: () => Promise<void>;
  readonly #onError: (err: unknown) => void;
  #running: Promise<void> | undefined;
  #again = false;
  #closed = false;
  #waiters: (() => void)[] = [];

  constructor(round: () => Promise<void>, onError: (err: unknown) => void) {
    this.#round = round;
    this.#onError = onError;
  }

  get running(): boolean {
    return this.#running !== undefined;
  }

  kick(): void {
    if (this.#closed) return;
    if (this.#running) {
      this.#again = true;
      return;
    }
    this.#running = this.#round()
      .catch((err) => this.#onError(err))
      .finally(() => {
        this.#running = undefined;
        if (this.#again && !this.#closed) {
          this.#again = false;
          this.kick();
        }
        if (!this.#running) for (const resolve of this.#waiters.splice(0)) resolve();
      });
  }

  async idle(): Promise<void> {
    if (!this.#running) return;
    await new Promise<void>((resolve) => this.#waiters.push(resolve));
  }

  /** No more rounds; resolves once the one running (if any) has ended. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#running;
  }
}

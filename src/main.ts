/**
 * `npm start`: load the configuration, build Vellum with its embedded defaults, listen, and on
 * SIGTERM/SIGINT drain in-flight requests and close storage cleanly.
 */
import { ConfigError, loadConfig } from './config.ts';
import { createVellum } from './server.ts';

async function main(): Promise<void> {
  // Data files (index with search rows, key file) are for this user only.
  process.umask(0o077);
  let config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`vellum: configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  // Some settings can only be checked against what the deployment holds (the consent model on chain).
  const vellum = await createVellum(config).catch((err: unknown) => {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`vellum: configuration error: ${err.message}\n`);
    process.exit(2);
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    vellum.app.log.info({ signal }, 'shutting down');
    vellum.close().then(
      () => process.exit(0),
      (err: unknown) => {
        vellum.app.log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  await vellum.app.listen({ host: config.host, port: config.port });
  vellum.app.log.info({ fhirBase: config.baseUrl, dataDir: config.dataDir }, 'Vellum is serving FHIR R4');
}

main().catch((err: unknown) => {
  process.stderr.write(`vellum: failed to start: ${(err as Error)?.stack ?? String(err)}\n`);
  process.exit(1);
});

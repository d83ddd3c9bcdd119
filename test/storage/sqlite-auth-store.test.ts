/** The SQLite AuthStore shows the behaviour every AuthStore must (auth-store.behavior.ts). */
import t from 'tap';
import { SqliteAuthStore } from '../../src/storage/sqlite/sqlite-auth-store.ts';
import { authStoreBehavior } from './auth-store.behavior.ts';

authStoreBehavior(t, async () => SqliteAuthStore.open(':memory:'));

import t from 'tap';
import { MemoryBlobStore } from '../../src/storage/memory-blob-store.ts';
import { blobStoreBehavior } from './blob-store.behavior.ts';

blobStoreBehavior(t, async () => new MemoryBlobStore());

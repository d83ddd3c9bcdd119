import t from 'tap';
import { storageError, isStorageError } from '../../src/storage/errors.ts';

t.test('storageError carries code and category', async (t) => {
  const err = storageError('VLM_X', 'not-found', 'missing');
  t.ok(isStorageError(err, 'VLM_X'));
  t.notOk(isStorageError(err, 'VLM_Y'));
  t.equal(err.category, 'not-found');
});

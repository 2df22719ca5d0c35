// lib/index.d.ts describes the kit as TypeScript sims use it: test/types/tank.ts type-checks
// (and its @ts-expect-error lines are errors), with the TypeScript compiler of devDependencies.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

test('a TypeScript sim type-checks against lib/index.d.ts', () => {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const project = fileURLToPath(new URL('./types/tsconfig.json', import.meta.url));
  const run = spawnSync(process.execPath, [tsc, '-p', project], { encoding: 'utf8' });
  assert.equal(run.status, 0, run.stdout + run.stderr);
});

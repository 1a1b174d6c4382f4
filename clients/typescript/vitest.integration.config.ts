import { defineConfig } from 'vitest/config';
import { aliases } from './tests/aliases.js';

/**
 * `npm run test:integration`: the SDK against the real `switchyard` binary (and a real
 * redis-server). One file at a time: each starts its own nodes, and the machine has 2 cores.
 */
export default defineConfig({
  resolve: { alias: aliases },
  test: {
    name: 'integration',
    include: ['tests/integration/**/*.test.ts'],
    environment: 'node',
    pool: 'forks',
    fileParallelism: false,
    sequence: { concurrent: false },
    testTimeout: 90_000,
    hookTimeout: 60_000,
    teardownTimeout: 30_000,
  },
});

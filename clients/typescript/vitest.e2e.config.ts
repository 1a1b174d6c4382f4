import { defineConfig } from 'vitest/config';
import { aliases } from './tests/aliases.js';

/**
 * `npm run test:e2e`: Chromium (Debian's /usr/bin/chromium, driven by playwright-core) on the
 * demo page that the real `switchyard` binary serves. One file at a time.
 */
export default defineConfig({
  resolve: { alias: aliases },
  test: {
    name: 'e2e',
    include: ['tests/e2e/**/*.test.ts'],
    environment: 'node',
    pool: 'forks',
    fileParallelism: false,
    sequence: { concurrent: false },
    testTimeout: 120_000,
    hookTimeout: 90_000,
    teardownTimeout: 30_000,
  },
});

import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));

/** Tests run against the packages' sources, so no build is needed first. */
const alias = [
  { find: /^@switchyard\/client\/testing$/, replacement: here('./packages/client/src/testing/index.ts') },
  { find: /^@switchyard\/client$/, replacement: here('./packages/client/src/index.ts') },
  { find: /^@switchyard\/react\/query$/, replacement: here('./packages/react/src/query.ts') },
  { find: /^@switchyard\/react$/, replacement: here('./packages/react/src/index.ts') },
];

export default defineConfig({
  resolve: { alias },
  oxc: { jsx: { runtime: 'automatic' } },
  test: {
    projects: [
      {
        extends: true,
        test: {
          name: 'client',
          include: ['packages/client/test/**/*.test.ts'],
          environment: 'node',
        },
      },
      {
        extends: true,
        test: {
          name: 'react',
          include: ['packages/react/test/**/*.test.{ts,tsx}'],
          environment: 'jsdom',
        },
      },
    ],
  },
});

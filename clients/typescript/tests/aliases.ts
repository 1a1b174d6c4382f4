import { fileURLToPath } from 'node:url';

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));

/** The tests run against the packages' sources, like the unit tests: no build needed first. */
export const aliases = [
  { find: /^@switchyard\/client\/testing$/, replacement: here('../packages/client/src/testing/index.ts') },
  { find: /^@switchyard\/client$/, replacement: here('../packages/client/src/index.ts') },
  { find: /^@switchyard\/react$/, replacement: here('../packages/react/src/index.ts') },
];

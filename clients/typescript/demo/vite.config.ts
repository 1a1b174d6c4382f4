import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));

/**
 * Builds the demo into the gateway's assets as exactly three fixed-name files, referenced with
 * absolute paths: /index.html, /demo.js, /demo.css. No content hashes, no other files, the
 * same bytes on every build.
 */
export default defineConfig({
  root: here('.'),
  base: '/',
  publicDir: false,
  logLevel: 'warn',
  resolve: {
    // The packages' sources: the demo builds without building the packages first.
    alias: [
      { find: /^@switchyard\/client$/, replacement: here('../packages/client/src/index.ts') },
      { find: /^@switchyard\/react$/, replacement: here('../packages/react/src/index.ts') },
    ],
  },
  oxc: { jsx: { runtime: 'automatic' } },
  // `npm run dev:demo`: the page from Vite, /ws and /dev/token from a gateway in dev mode.
  server: {
    proxy: {
      '/ws': { target: process.env.SWITCHYARD_URL ?? 'http://127.0.0.1:8080', ws: true },
      '/dev': { target: process.env.SWITCHYARD_URL ?? 'http://127.0.0.1:8080' },
    },
  },
  build: {
    outDir: here('../../../crates/gateway/assets/demo'),
    emptyOutDir: true,
    assetsDir: '',
    cssCodeSplit: false,
    sourcemap: false,
    reportCompressedSize: false,
    modulePreload: { polyfill: false },
    rolldownOptions: {
      output: {
        entryFileNames: 'demo.js',
        chunkFileNames: 'demo-[name].js',
        assetFileNames: 'demo[extname]',
      },
    },
  },
});

// Tokens for the load scripts.
//
// With SWITCHYARD_JWT_SECRET set, tokens are HS256 JWTs signed here (base64url, no padding), the
// same way a backend would mint them: `sub`, `name`, `exp` (now + TOKEN_TTL_S), `iat`,
// `publish: true`, and `iss`/`aud` from SWITCHYARD_JWT_ISSUER / SWITCHYARD_JWT_AUDIENCE when set.
// Without a secret, the token comes from the node's development endpoint
// `GET /dev/token?user=ID&name=NAME` (dev mode on loopback only). In dev mode each node has its
// own random secret unless one is configured, so the token is fetched from the node the
// connection goes to.
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import http from 'k6/http';
import { envInt, httpBase } from './config.js';

const SECRET = __ENV.SWITCHYARD_JWT_SECRET || '';
const ISSUER = __ENV.SWITCHYARD_JWT_ISSUER || '';
const AUDIENCE = __ENV.SWITCHYARD_JWT_AUDIENCE || '';
const TTL_S = envInt('TOKEN_TTL_S', 7200);

export const TOKEN_SOURCE = SECRET ? 'hs256' : 'dev-endpoint';

function b64url(s) {
  return encoding.b64encode(s, 'rawurl');
}

export function mintHs256(claims, secret) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = crypto.hmac('sha256', secret, `${head}.${body}`, 'base64rawurl');
  return `${head}.${body}.${sig}`;
}

function expOf(token) {
  try {
    const claims = JSON.parse(encoding.b64decode(token.split('.')[1], 'rawurl', 's'));
    return typeof claims.exp === 'number' ? claims.exp * 1000 : Date.now() + 3600 * 1000;
  } catch (e) {
    return Date.now() + 3600 * 1000;
  }
}

// Returns {token, expMs} for user `sub` connecting to `url`, or null (after counting the
// failure in the caller) when the dev endpoint does not answer.
export function tokenFor(url, sub, name) {
  if (SECRET) {
    const now = Math.floor(Date.now() / 1000);
    const claims = { sub, name, iat: now, exp: now + TTL_S, publish: true };
    if (ISSUER) claims.iss = ISSUER;
    if (AUDIENCE) claims.aud = AUDIENCE;
    return { token: mintHs256(claims, SECRET), expMs: claims.exp * 1000 };
  }
  const q = `user=${encodeURIComponent(sub)}&name=${encodeURIComponent(name || sub)}`;
  const res = http.get(`${httpBase(url)}/dev/token?${q}`, { tags: { name: 'dev-token' } });
  if (res.status !== 200) {
    console.error(
      `dev token from ${httpBase(url)} failed (HTTP ${res.status}): set SWITCHYARD_JWT_SECRET, or run the node in dev mode (SWITCHYARD_DEV=1 on loopback)`,
    );
    return null;
  }
  const token = res.json('token');
  return { token, expMs: expOf(token) };
}

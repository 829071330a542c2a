// A real third-party OpenID Provider for the interop test: panva's `oidc-provider` (npm, a
// certified OpenID Provider implementation), configured here and run on loopback.
//
//   node oidc_provider.mjs CONFIG.json
//
// CONFIG: {"issuer": "http://127.0.0.1:PORT", "port": PORT, "audience": "temporal",
//          "resource": "urn:temporal", "keys": [private JWKs; the first one signs],
//          "clients": [{"client_id", "client_secret", "permissions": [...]}]}
//
// Client-credentials grant only. Access tokens for the resource indicator `resource` (the
// default resource) are RFC 9068 JWTs (`typ: at+jwt`, RS256) with `aud` = `audience` and the
// client's `permissions` (Temporal's claim) added with extraTokenClaims. Prints "listening"
// once it accepts connections. Loopback only: it refuses any other issuer host.
import { readFileSync } from 'node:fs';

import Provider, { errors } from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const issuer = new URL(config.issuer);
if (!['127.0.0.1', 'localhost', '[::1]'].includes(issuer.hostname)) {
  throw new Error(`refusing a non-loopback issuer ${config.issuer}`);
}
const permissions = new Map(config.clients.map((c) => [c.client_id, c.permissions || []]));

const provider = new Provider(config.issuer, {
  clients: config.clients.map((c) => ({
    client_id: c.client_id,
    client_secret: c.client_secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'temporal',
  })),
  jwks: { keys: config.keys },
  scopes: ['temporal'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => config.resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => {
        if (resourceIndicator !== config.resource) {
          throw new errors.InvalidTarget();
        }
        return {
          scope: 'temporal',
          audience: config.audience,
          accessTokenTTL: 600,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'RS256' } },
        };
      },
    },
  },
  extraTokenClaims: async (ctx, token) => {
    const granted = permissions.get(token.clientId);
    return granted && granted.length ? { permissions: granted } : undefined;
  },
});

const server = provider.listen(config.port, '127.0.0.1', () => {
  console.log('listening', config.issuer);
});
const stop = () => server.close(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

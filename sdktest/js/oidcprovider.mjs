// Runs panva/oidc-provider, a third-party OAuth 2.0 server, on a loopback
// port, for ../oidc_provider_test.go: clients that authenticate with
// client_secret_basic and may use the client_credentials grant, and one
// resource server whose access tokens are JWTs (RFC 9068), so that the
// sidecar is tested against a token endpoint that is not Entra.
//
//   OIDC_CLIENTS='[{"client_id": "...", "client_secret": "..."}]' node oidcprovider.mjs <port> <resource>
//
// The clients come from the environment, not the command line, as they hold
// secrets. Prints one line, {"issuer": "...", "token_endpoint": "..."},
// once it listens; logs each token request's outcome (never a secret) on
// stderr.
import { generateKeyPairSync } from "node:crypto";
import Provider from "oidc-provider";

const [portArg, resource] = process.argv.slice(2);
const clients = JSON.parse(process.env.OIDC_CLIENTS || "[]").map((c) => ({
  client_id: c.client_id,
  client_secret: c.client_secret,
  grant_types: ["client_credentials"],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: "client_secret_basic",
}));
const signingKey = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ format: "jwk" });

const issuer = `http://127.0.0.1:${portArg}`;
const provider = new Provider(issuer, {
  clients,
  clientAuthMethods: ["client_secret_basic"],
  ttl: { ClientCredentials: 3600 },
  jwks: { keys: [{ ...signingKey, kid: "sdktest", use: "sig", alg: "RS256" }] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        if (indicator !== resource) {
          throw new Error("unknown resource");
        }
        return { scope: "orders:read", audience: resource, accessTokenFormat: "jwt", accessTokenTTL: 3600, jwt: { sign: { alg: "RS256" } } };
      },
    },
  },
});
provider.on("grant.success", (ctx) => process.stderr.write(`token issued to ${ctx.oidc.client && ctx.oidc.client.clientId}\n`));
provider.on("grant.error", (ctx, err) => process.stderr.write(`token refused: ${err.message} ${err.error_description || ""}\n`));

const server = provider.listen(Number(portArg), "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ issuer, token_endpoint: `${issuer}/token` }) + "\n");
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));

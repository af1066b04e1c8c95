// Runs panva/oidc-provider, a third-party OAuth 2.0 server, on a loopback
// port, for ../oidc_provider_test.go: clients that may use the
// client_credentials grant, and one resource server whose access tokens
// are JWTs (RFC 9068), so that the sidecar is tested against a token
// endpoint that is not Entra.
//
//   OIDC_CLIENTS='[{"client_id": "...", "client_secret": "..."}]' node oidcprovider.mjs <port> <resource>
//
// Each client is oidc-provider client metadata; token_endpoint_auth_method
// defaults to client_secret_basic. With OIDC_TLS_CERT, OIDC_TLS_KEY and
// OIDC_TLS_CA (PEM files) it serves HTTPS and asks every client for a
// certificate, which it verifies against OIDC_TLS_CA for tls_client_auth
// and compares with the client's registered keys for
// self_signed_tls_client_auth (RFC 8705). The clients come from the
// environment, not the command line, as they hold secrets. Prints one
// line, {"issuer": "...", "token_endpoint": "..."}, once it listens; logs
// each token request's outcome (the client, and the SHA-256 fingerprint of
// the certificate it presented; never a secret) on stderr.
import { generateKeyPairSync } from "node:crypto";
import { readFileSync } from "node:fs";
import https from "node:https";
import Provider from "oidc-provider";

const [portArg, resource] = process.argv.slice(2);
const clients = JSON.parse(process.env.OIDC_CLIENTS || "[]").map((c) => ({
  grant_types: ["client_credentials"],
  response_types: [],
  redirect_uris: [],
  token_endpoint_auth_method: "client_secret_basic",
  ...c,
}));
const signingKey = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ format: "jwk" });
const tls = process.env.OIDC_TLS_CERT
  ? {
      cert: readFileSync(process.env.OIDC_TLS_CERT),
      key: readFileSync(process.env.OIDC_TLS_KEY),
      ca: readFileSync(process.env.OIDC_TLS_CA),
      requestCert: true,
      rejectUnauthorized: false, // self-signed client certificates too; tls_client_auth checks `authorized`
    }
  : null;
const peerCertificate = (ctx) => (tls && ctx.socket.getPeerX509Certificate ? ctx.socket.getPeerX509Certificate() : undefined);

const issuer = `${tls ? "https" : "http"}://127.0.0.1:${portArg}`;
const provider = new Provider(issuer, {
  clients,
  clientAuthMethods: tls ? ["client_secret_basic", "tls_client_auth", "self_signed_tls_client_auth"] : ["client_secret_basic"],
  ttl: { ClientCredentials: 3600 },
  jwks: { keys: [{ ...signingKey, kid: "sdktest", use: "sig", alg: "RS256" }] },
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    mTLS: {
      enabled: Boolean(tls),
      tlsClientAuth: true,
      selfSignedTlsClientAuth: true,
      getCertificate: (ctx) => {
        const cert = peerCertificate(ctx);
        return cert ? cert.toString() : undefined;
      },
      certificateAuthorized: (ctx) => ctx.socket.authorized === true,
      certificateSubjectMatches: (ctx, property, expected) =>
        property === "tls_client_auth_subject_dn" && peerCertificate(ctx).subject === expected,
    },
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
const presented = (ctx) => {
  const cert = peerCertificate(ctx);
  return cert ? ` with certificate ${cert.fingerprint256}` : "";
};
provider.on("grant.success", (ctx) =>
  process.stderr.write(`token issued to ${ctx.oidc.client && ctx.oidc.client.clientId}${presented(ctx)}\n`));
provider.on("grant.error", (ctx, err) => process.stderr.write(`token refused: ${err.message} ${err.error_description || ""}\n`));

const server = tls ? https.createServer(tls, provider.callback()) : provider;
const listening = server.listen(Number(portArg), "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ issuer, token_endpoint: `${issuer}/token` }) + "\n");
});
process.on("SIGTERM", () => listening.close(() => process.exit(0)));

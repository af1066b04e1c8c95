// Gets tokens with @azure/identity as an unmodified application would: the
// credential finds the sidecar through the environment alone
// (IDENTITY_ENDPOINT + IDENTITY_HEADER, or AZURE_POD_IDENTITY_AUTHORITY_HOST).
//
//   node gettoken.js <managed|default> <scope> <calls>
//
// Prints one JSON line per call: {"token": "...", "expiresOnTimestamp": ...}.
// Run by ../sdk_node_test.go, which checks the tokens against the emulator that
// issued them; the tokens are the emulator's, made for the test.
"use strict";

const { ManagedIdentityCredential, DefaultAzureCredential } = require("@azure/identity");

async function main() {
  const [kind, scope, callsArg] = process.argv.slice(2);
  const calls = Number(callsArg || "1");
  const credential =
    kind === "default" ? new DefaultAzureCredential() : new ManagedIdentityCredential();
  for (let i = 0; i < calls; i++) {
    const token = await credential.getToken(scope);
    process.stdout.write(
      JSON.stringify({ token: token.token, expiresOnTimestamp: token.expiresOnTimestamp }) + "\n",
    );
  }
}

main().catch((err) => {
  process.stderr.write(`getToken failed: ${err && err.name}: ${err && err.message}\n`);
  process.exit(1);
});

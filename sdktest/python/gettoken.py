# Gets tokens with azure-identity (the Azure SDK for Python) as an unmodified
# application would: the credential finds the sidecar through the environment
# alone (IDENTITY_ENDPOINT + IDENTITY_HEADER, or
# AZURE_POD_IDENTITY_AUTHORITY_HOST).
#
#   python3 gettoken.py <managed|default> <scope> <calls>
#
# Prints one JSON line per call: {"token": "...", "expires_on": ...}; on a
# failure, the exception's type, the HTTP status it carries and its message
# on stderr, and exits 1. Run by
# ../sdk_python_test.go, which checks the tokens against the emulator that
# issued them; the tokens are the emulator's, made for the test.
import json
import logging
import os
import sys

from azure.identity import DefaultAzureCredential, ManagedIdentityCredential


def main():
    kind, scope, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
    level = os.environ.get("TEST_AZURE_LOG_LEVEL")
    if level:
        logging.basicConfig(stream=sys.stderr, level=level.upper())
    credential = DefaultAzureCredential() if kind == "default" else ManagedIdentityCredential()
    for _ in range(calls):
        token = credential.get_token(scope)
        sys.stdout.write(json.dumps({"token": token.token, "expires_on": token.expires_on}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    try:
        main()
    except Exception as err:  # pylint:disable=broad-except
        status = getattr(err, "status_code", None)
        sys.stderr.write("get_token failed: %s (status %s): %s\n" % (type(err).__name__, status, err))
        sys.exit(1)

package entra

// aadstsHints says what to do about the AADSTS codes a client-credentials
// setup meets most, in one line each, for the `caddy entra` CLI and logs.
var aadstsHints = map[int]string{
	7000215: "the client secret is wrong: use the secret's Value (not its Secret ID) from the app registration's Certificates & secrets",
	7000222: "the client secret has expired: create a new one under Certificates & secrets and update the sidecar's secret",
	700016:  "no application with this client_id in this tenant: check client_id and tenant_id (an app from another tenant needs admin consent here first)",
	90002:   "the tenant does not exist: check tenant_id (a GUID or a verified domain) and authority_host (sovereign clouds have their own)",
	500011:  "the resource of the scope is not in the tenant: check the scope's URI (Expose an API > Application ID URI) and that the API's service principal exists",
	65001:   "consent is missing: grant admin consent to the application's API permissions (application permissions need an administrator)",
	700027:  "the certificate is not registered on the app registration, or the private key does not belong to it",
	70011:   "invalid scope: a client-credentials scope is the resource followed by /.default",
	7000112: "the application is disabled in the tenant",
}

// Hint returns one line on how to fix the failure, for the AADSTS codes a
// client-credentials setup meets most (7000215, 7000222, 700016, 90002,
// 500011, 65001...), or "" when there is none. It never holds a secret.
func (e *RequestError) Hint() string {
	for _, code := range e.ErrorCodes {
		if hint, ok := aadstsHints[code]; ok {
			return hint
		}
	}
	return ""
}

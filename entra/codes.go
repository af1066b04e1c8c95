package entra

// oauthCodes are what the package makes of OAuth 2.0 "error" values: a
// summary (RequestError.Summary; "" names the status instead), and whether
// only a change of configuration can fix it.
var oauthCodes = map[string]struct {
	summary   string
	permanent bool
}{
	"invalid_client":          {summary: "client authentication failed", permanent: true},
	"unauthorized_client":     {summary: "client not authorized", permanent: true},
	"invalid_scope":           {summary: "invalid scope", permanent: true},
	"invalid_request":         {summary: "invalid token request", permanent: true},
	"invalid_grant":           {summary: "invalid grant", permanent: true},
	"unsupported_grant_type":  {summary: "unsupported grant type", permanent: true},
	"invalid_resource":        {permanent: true},
	"access_denied":           {permanent: true},
	"temporarily_unavailable": {summary: "token endpoint temporarily unavailable"},
}

// aadstsCodes are the AADSTS codes the package names, all permanent
// failures: a summary (RequestError.Summary), a one-line hint for the codes
// met most (RequestError.Hint), and what the code says of the user in an
// on-behalf-of exchange (RequestError.UserFailure).
var aadstsCodes = map[int]struct {
	summary, hint string
	user          UserFailure
}{
	7000215: {summary: "invalid client secret", hint: "the client secret is wrong: use the secret's Value (not its Secret ID) from the app registration's Certificates & secrets"},
	7000222: {summary: "client secret expired", hint: "the client secret has expired: create a new one under Certificates & secrets and update the sidecar's secret"},
	7000216: {summary: "client credential missing"},
	700016:  {summary: "application not found in tenant", hint: "no application with this client_id in this tenant: check client_id and tenant_id (an app from another tenant needs admin consent here first)"},
	90002:   {summary: "tenant not found", hint: "the tenant does not exist: check tenant_id (a GUID or a verified domain) and authority_host (sovereign clouds have their own)"},
	900023:  {summary: "invalid tenant identifier"},
	70011:   {summary: "invalid scope", hint: "invalid scope: a client-credentials scope is the resource followed by /.default"},
	1002012: {summary: "invalid scope"},
	28000:   {summary: "invalid scope (more than one resource)"},
	500011:  {summary: "resource not found in tenant", hint: "the resource of the scope is not in the tenant: check the scope's URI (Expose an API > Application ID URI) and that the API's service principal exists"},
	65001:   {summary: "consent missing", hint: "consent is missing: grant admin consent to the application's API permissions (application permissions need an administrator; on-behalf-of needs the delegated ones)", user: ConsentRequired},
	65004:   {summary: "user declined consent", user: ConsentRequired},
	700027:  {summary: "client assertion failed signature validation (certificate not registered or wrong key)", hint: "the certificate is not registered on the app registration, or the private key does not belong to it"},
	700024:  {summary: "client assertion is not within its valid time range"},
	700023:  {summary: "client assertion audience is not the token endpoint"},
	700021:  {summary: "client assertion issuer or subject is not the client ID"},
	50027:   {summary: "assertion is malformed", user: UserTokenInvalid},
	50013:   {summary: "assertion rejected", user: UserTokenInvalid},
	500133:  {summary: "user token expired", user: UserTokenInvalid},
	500131:  {summary: "user token audience is not the application", hint: "the user's token is for another application: its aud must be this client ID, api://<client ID> or the App ID URI (Expose an API)", user: UserTokenInvalid},
	50173:   {summary: "user's grant revoked: a fresh sign-in is needed", user: UserTokenInvalid},
	50132:   {summary: "user's session revoked (password changed or reset)", user: UserTokenInvalid},
	50133:   {summary: "user's session invalid (password expired)", user: UserTokenInvalid},
	50057:   {summary: "user account disabled", user: UserTokenInvalid},
	50053:   {summary: "user account locked", user: UserTokenInvalid},
	50076:   {summary: "multi-factor authentication required", user: InteractionRequired},
	50079:   {summary: "multi-factor authentication registration required", user: InteractionRequired},
	50074:   {summary: "strong authentication required", user: InteractionRequired},
	50158:   {summary: "external security challenge not satisfied", user: InteractionRequired},
	53000:   {summary: "device not compliant (Conditional Access)", user: InteractionRequired},
	53001:   {summary: "device not domain-joined (Conditional Access)", user: InteractionRequired},
	70021:   {summary: "no matching federated identity credential"},
	700211:  {summary: "no federated identity credential for the assertion's issuer"},
	700212:  {summary: "no federated identity credential for the assertion's audience"},
	700213:  {summary: "no federated identity credential for the assertion's subject"},
	7000274: {summary: "certificate is outside its validity period"},
	7000214: {summary: "certificate revoked"},
	7000112: {summary: "application is disabled", hint: "the application is disabled in the tenant"},
	53003:   {summary: "blocked by Conditional Access", user: InteractionRequired},
	90014:   {summary: "required field missing from the token request"},
	900144:  {summary: "required parameter missing from the token request"},
	70003:   {summary: "unsupported grant type"},
}

// Hint returns one line on how to fix the failure, for the AADSTS codes met
// most, or "". It never holds a secret.
func (e *RequestError) Hint() string {
	for _, code := range e.ErrorCodes {
		if hint := aadstsCodes[code].hint; hint != "" {
			return hint
		}
	}
	return ""
}

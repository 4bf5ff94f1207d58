// A real OpenID provider for hub's sign-in tests: oidc-provider with its development login screen
// (any login name and password sign in). Everything comes from the environment, set by
// tests/support/oidc.py:
//   OIDC_PORT, OIDC_ISSUER, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URIS (JSON list),
//   OIDC_POST_LOGOUT_URIS (JSON list), OIDC_JWKS (JSON: a private JWK set), OIDC_USERS (JSON:
//   login -> {name, email, groups}; a login not listed has no groups).
import Provider from "oidc-provider";

const env = process.env;
const users = JSON.parse(env.OIDC_USERS || "{}");

const configuration = {
  clients: [{
    client_id: env.OIDC_CLIENT_ID,
    client_secret: env.OIDC_CLIENT_SECRET,
    redirect_uris: JSON.parse(env.OIDC_REDIRECT_URIS),
    post_logout_redirect_uris: JSON.parse(env.OIDC_POST_LOGOUT_URIS || "[]"),
    grant_types: ["authorization_code"],
    response_types: ["code"],
    token_endpoint_auth_method: "client_secret_basic",
  }],
  pkce: { required: () => true },
  // Scope claims go into the ID token itself (the hub reads the person from it).
  conformIdTokenClaims: false,
  claims: { openid: ["sub"], profile: ["name", "groups"], email: ["email", "email_verified"] },
  features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
  jwks: JSON.parse(env.OIDC_JWKS),
  cookies: { keys: ["hub-test-provider-cookie-key"] },
  async findAccount(ctx, id) {
    const user = users[id] || { name: id, email: `${id}@example.org`, groups: [] };
    return {
      accountId: id,
      async claims() {
        return { sub: id, name: user.name, email: user.email, email_verified: true, groups: user.groups };
      },
    };
  },
};

const provider = new Provider(env.OIDC_ISSUER, configuration);
const server = provider.listen(Number(env.OIDC_PORT), "127.0.0.1", () => {
  console.log(`oidc-provider listening on ${env.OIDC_ISSUER}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => server.close(() => process.exit(0)));

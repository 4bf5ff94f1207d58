// A real OpenID provider for hub's sign-in tests: oidc-provider with its development login screen
// (any login name and password sign in). Everything comes from the environment, set by
// tests/support/oidc.py:
//   OIDC_PORT, OIDC_ISSUER, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URIS (JSON list),
//   OIDC_POST_LOGOUT_URIS (JSON list), OIDC_JWKS (JSON: a private JWK set), OIDC_USERS (JSON:
//   login -> {name, email, groups}; a login not listed has no groups).
// Tests only: POST /__test/tamper?mode=M forges the ID tokens it hands out (see below), and
// POST /__test/ttl?id_token=N gives them N seconds of life.
import * as jose from "jose";
import Provider from "oidc-provider";

const env = process.env;
let idTokenTtl = 3600;   // seconds; POST /__test/ttl?id_token=N sets it (a session ends with its ID token)
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
  ttl: { IdToken: () => idTokenTtl },
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

// Test control: `POST /__test/tamper?mode=M` makes the token endpoint hand out ID tokens forged or
// altered in way M (empty: genuine again), so the hub's /auth/callback meets each of them for real.
let tamper = "";
const signingJwk = JSON.parse(env.OIDC_JWKS).keys[0];
const b64 = (obj) => Buffer.from(JSON.stringify(obj)).toString("base64url");

async function forge(idToken, mode) {
  const claims = jose.decodeJwt(idToken);
  const header = { ...jose.decodeProtectedHeader(idToken) };
  const now = Math.floor(Date.now() / 1000);
  let key = await jose.importJWK(signingJwk, header.alg);
  if (mode === "audience") claims.aud = "someone-else";
  else if (mode === "expired") Object.assign(claims, { iat: now - 7200, exp: now - 3600 });
  else if (mode === "nonce") claims.nonce = "not-the-nonce-this-browser-sent";
  else if (mode === "issuer") claims.iss = "http://127.0.0.1:9/";
  else if (mode === "kid") {
    header.kid = "stranger";
    key = (await jose.generateKeyPair(header.alg)).privateKey;
  } else if (mode === "none") return `${b64({ alg: "none", kid: header.kid })}.${b64(claims)}.`;
  else if (mode === "altered") {   // the provider's signature over other claims
    const [h, , sig] = idToken.split(".");
    return `${h}.${b64({ ...claims, sub: "mallory", groups: ["oncall"] })}.${sig}`;
  } else throw new Error(`unknown tamper mode ${mode}`);
  return new jose.SignJWT(claims).setProtectedHeader(header).sign(key);
}

provider.use(async (ctx, next) => {
  if (ctx.path === "/__test/tamper" && ctx.method === "POST") {
    tamper = ctx.query.mode || "";
    ctx.status = 204;
    return;
  }
  if (ctx.path === "/__test/ttl" && ctx.method === "POST") {
    idTokenTtl = Number(ctx.query.id_token) || 3600;
    ctx.status = 204;
    return;
  }
  await next();
  if (tamper && ctx.path === "/token" && ctx.body && ctx.body.id_token) {
    ctx.body = { ...ctx.body, id_token: await forge(ctx.body.id_token, tamper) };
  }
});
const server = provider.listen(Number(env.OIDC_PORT), "127.0.0.1", () => {
  console.log(`oidc-provider listening on ${env.OIDC_ISSUER}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => server.close(() => process.exit(0)));

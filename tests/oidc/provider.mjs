// node-oidc-provider (OpenID Certified), configured as a party's identity provider for the
// workload's sign-in interoperability test (crates/conclave/tests/oidc_interop.rs).
//
//   ISSUER=https://127.0.0.1:PORT PORT=… CERT=chain.pem KEY=key.pem \
//   REDIRECT_URI=https://127.0.0.1:W/auth/callback CLIENT_SECRET=… node provider.mjs
//
// Users sign in through its development interactions (any password); a user's roles are the
// part of the login after the last '-' ("alice-member" → ["member"]). A confidential client
// `api-client` gets RFC 9068 JWT access tokens for the workload's audience by client
// credentials, with the roles "member" and "analyst".
import crypto from "node:crypto";
import { readFileSync } from "node:fs";
import https from "node:https";
import Provider from "oidc-provider";

const env = (name) => {
  if (!process.env[name]) throw new Error(name + " is not set");
  return process.env[name];
};
const audience = "api://conclave-workload";
const privateJwk = (type, options, alg) => {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: "jwk" }), alg, use: "sig", kid: alg.toLowerCase() + "-1" };
};
const rolesOf = (login) => [login.split("-").pop()];

const provider = new Provider(env("ISSUER"), {
  clients: [
    {
      client_id: "conclave-workload",
      token_endpoint_auth_method: "none",
      redirect_uris: [env("REDIRECT_URI")],
      grant_types: ["authorization_code"],
      response_types: ["code"],
    },
    {
      client_id: "api-client",
      client_secret: env("CLIENT_SECRET"),
      grant_types: ["client_credentials"],
      response_types: [],
      redirect_uris: [],
    },
  ],
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, name: id, roles: rolesOf(id) };
      },
    };
  },
  claims: { openid: ["sub"], profile: ["name", "preferred_username", "roles"] },
  // Put the profile claims in the ID token (the workload reads roles from it).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  jwks: {
    keys: [
      privateJwk("rsa", { modulusLength: 2048 }, "RS256"),
      privateJwk("ec", { namedCurve: "P-256" }, "ES256"),
    ],
  },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        scope: "api",
        audience,
        accessTokenFormat: "jwt",
        jwt: { sign: { alg: "ES256" } },
      }),
    },
  },
  async extraTokenClaims(ctx, token) {
    if (token.kind === "ClientCredentials") return { roles: ["member", "analyst"] };
    if (token.accountId) return { roles: rolesOf(token.accountId) };
    return undefined;
  },
});

https
  .createServer({ cert: readFileSync(env("CERT")), key: readFileSync(env("KEY")) }, provider.callback())
  .listen(Number(env("PORT")), "127.0.0.1", () => console.log("ready"));

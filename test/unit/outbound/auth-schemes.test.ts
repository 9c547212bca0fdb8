import { describe, expect, it } from "vitest";
import { credentialFields, reservedNames } from "../../../src/outbound/auth-schemes.js";
import type { AuthScheme, HmacRecipe } from "../../../src/outbound/provider-schema.js";

const recipe: HmacRecipe = {
  keyField: "key",
  secretField: "secret",
  algorithm: "sha256",
  secretEncoding: "raw",
  signatureEncoding: "hex",
  apiKeyHeader: "X-API-Key",
  timestamp: { in: "query", name: "Timestamp", unit: "ms" },
  nonce: { in: "body", name: "Nonce" },
  signature: { in: "header", name: "X-Sign" },
  message: [{ type: "body" }],
  fieldHeaders: [{ name: "X-Passphrase", field: "passphrase" }],
};

const names = (scheme: AuthScheme) => {
  const reserved = reservedNames(scheme);
  return {
    headers: [...reserved.headers].sort(),
    params: [...reserved.params].sort(),
    bodyFields: [...reserved.bodyFields].sort(),
  };
};

describe("auth schemes", () => {
  it.each<[string, AuthScheme, string[], ReturnType<typeof names>]>([
    [
      "bearer",
      { type: "bearer", field: "token" },
      ["token"],
      { headers: ["authorization"], params: [], bodyFields: [] },
    ],
    [
      "header",
      { type: "header", name: "X-Api-Key", field: "key" },
      ["key"],
      { headers: ["x-api-key"], params: [], bodyFields: [] },
    ],
    [
      "query",
      { type: "query", param: "ApiKey", field: "key" },
      ["key"],
      { headers: [], params: ["apikey"], bodyFields: [] },
    ],
    [
      "basic",
      { type: "basic", usernameField: "user", passwordField: "password" },
      ["user", "password"],
      { headers: ["authorization"], params: [], bodyFields: [] },
    ],
    [
      "facebook",
      { type: "facebook", accessTokenField: "token", appSecretField: "appSecret" },
      ["token", "appSecret"],
      { headers: [], params: ["access_token", "appsecret_proof", "appsecret_time"], bodyFields: [] },
    ],
    [
      "hmac",
      { type: "hmac", recipe },
      ["key", "secret", "passphrase"],
      { headers: ["x-api-key", "x-passphrase", "x-sign"], params: ["timestamp"], bodyFields: ["nonce"] },
    ],
  ])(
    "%s: reads exactly its secret fields and reserves, lower-cased, every name it sets",
    (_, scheme, fields, reserved) => {
      expect(credentialFields(scheme)).toEqual(fields);
      expect(names(scheme)).toEqual(reserved);
    },
  );
});

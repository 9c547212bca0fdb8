import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import { loadProviderRegistry, type ProviderRegistry } from "../../../src/outbound/provider-registry.js";
import {
  classificationPath,
  classifyOperation,
  DANGEROUS_CLASSES,
  isDangerousClass,
  type OperationClass,
} from "../../../src/policy/operation-class.js";

const SHIPPED = fileURLToPath(new URL("../../../providers/providers.json", import.meta.url));

let registry: ProviderRegistry;
beforeAll(async () => {
  registry = await loadProviderRegistry(SHIPPED, { production: true });
});

const classOf = (providerId: string, method: string, path: string): OperationClass | undefined => {
  const provider = registry.get(providerId);
  if (provider === undefined) throw new Error(`no provider ${providerId}`);
  return classifyOperation(provider, method, path);
};

// The endpoints issue 13 names, and their neighbours, from each provider's public API reference.
// Paths are relative to the provider's base URL (OpenAI's and Graph's carry a version prefix).
const DANGEROUS_ENDPOINTS: ReadonlyArray<readonly [string, string, string, OperationClass]> = [
  ["binance", "POST", "/sapi/v1/capital/withdraw/apply", "transfer"],
  ["binance", "POST", "/sapi/v1/asset/transfer", "transfer"],
  ["binance", "POST", "/sapi/v1/sub-account/universalTransfer", "transfer"],
  ["binance", "POST", "/sapi/v1/sub-account/transfer/subToMaster", "transfer"],
  ["binance", "POST", "/sapi/v1/giftcard/createCode", "transfer"],
  ["binance", "POST", "/sapi/v1/sub-account/virtualSubAccount", "credentials"],
  ["binance", "POST", "/sapi/v1/sub-account/subAccountApi/ipRestriction", "credentials"],
  ["binance", "POST", "/sapi/v1/broker/subAccountApi", "credentials"],
  ["binance", "DELETE", "/sapi/v1/broker/subAccountApi", "credentials"],
  ["kraken", "POST", "/0/private/Withdraw", "transfer"],
  ["kraken", "POST", "/0/private/WalletTransfer", "transfer"],
  ["kraken", "POST", "/0/private/AccountTransfer", "transfer"],
  ["kraken", "POST", "/0/private/CreateSubaccount", "credentials"],
  ["kraken", "POST", "/0/private/GetWebSocketsToken", "credentials"],
  ["coinbase-exchange", "POST", "/withdrawals/crypto", "transfer"],
  ["coinbase-exchange", "POST", "/profiles/transfer", "transfer"],
  ["github", "POST", "/user/keys", "credentials"],
  ["github", "DELETE", "/user/keys/42", "credentials"],
  ["github", "POST", "/user/gpg_keys", "credentials"],
  ["github", "POST", "/repos/octo/app/keys", "credentials"],
  ["github", "PUT", "/repos/octo/app/actions/secrets/NPM_TOKEN", "credentials"],
  ["github", "PUT", "/repos/octo/app/collaborators/mallory", "credentials"],
  ["github", "POST", "/repos/octo/app/hooks", "webhooks"],
  ["github", "PATCH", "/orgs/octo/hooks/7", "webhooks"],
  ["github", "POST", "/repos/octo/app/transfer", "transfer"],
  ["stripe", "POST", "/v1/payouts", "transfer"],
  ["stripe", "POST", "/v1/transfers", "transfer"],
  ["stripe", "POST", "/v1/accounts/acct_1/external_accounts", "transfer"],
  ["stripe", "POST", "/v1/webhook_endpoints", "webhooks"],
  ["stripe", "POST", "/v1/accounts/acct_1/login_links", "credentials"],
  ["openai", "POST", "/organization/admin_api_keys", "credentials"],
  ["facebook-graph", "GET", "/oauth/access_token", "credentials"],
  ["facebook-graph", "POST", "/1234/subscriptions", "webhooks"],
  ["facebook-graph", "POST", "/1234/subscribed_apps", "webhooks"],
  ["facebook-graph", "POST", "/1234/roles", "credentials"],
];

const ORDINARY_ENDPOINTS: ReadonlyArray<readonly [string, string, string, OperationClass]> = [
  ["binance", "GET", "/api/v3/account", "read"],
  ["binance", "GET", "/sapi/v1/account/apiRestrictions", "read"],
  ["binance", "GET", "/sapi/v1/capital/withdraw/history", "read"],
  ["binance", "POST", "/api/v3/order", "trade"],
  ["binance", "DELETE", "/api/v3/order", "trade"],
  ["kraken", "POST", "/0/private/Balance", "read"],
  ["kraken", "POST", "/0/private/AddOrder", "trade"],
  ["coinbase-exchange", "GET", "/accounts", "read"],
  ["coinbase-exchange", "POST", "/orders", "trade"],
  ["github", "GET", "/user/repos", "read"],
  ["github", "POST", "/repos/octo/app/issues", "write"],
  ["stripe", "GET", "/v1/balance", "read"],
  ["stripe", "POST", "/v1/customers", "write"],
  ["openai", "POST", "/chat/completions", "write"],
  ["openai", "GET", "/models", "read"],
  ["facebook-graph", "GET", "/me", "read"],
];

describe("operation classes of the shipped providers (SPEC I10)", () => {
  it("H85 gives every shipped provider a default grant without a dangerous class", () => {
    for (const id of registry.ids()) {
      const grant = registry.get(id)?.definition.defaultGrant ?? [];
      expect(grant.filter(isDangerousClass), id).toEqual([]);
      expect(grant.length, id).toBeGreaterThan(0);
    }
    expect([...DANGEROUS_CLASSES].sort()).toEqual(["credentials", "transfer", "webhooks"]);
  });

  it.each(DANGEROUS_ENDPOINTS)("H86 classifies %s %s %s as %s", (provider, method, path, expected) => {
    expect(classOf(provider, method, path)).toBe(expected);
    expect(isDangerousClass(expected)).toBe(true);
  });

  it.each(ORDINARY_ENDPOINTS)("classifies %s %s %s as %s", (provider, method, path, expected) => {
    expect(classOf(provider, method, path)).toBe(expected);
  });

  it("H86 leaves endpoints no rule names unclassified, so they are refused", () => {
    expect(classOf("binance", "POST", "/sapi/v1/some/new/endpoint")).toBeUndefined();
    expect(classOf("kraken", "POST", "/0/private/SomethingNew")).toBeUndefined();
    expect(classOf("coinbase-exchange", "PUT", "/profiles/abc/deactivate")).toBeUndefined();
  });

  it.each([
    ["upper case", "/SAPI/v1/capital/WITHDRAW/apply"],
    ["a trailing slash", "/sapi/v1/capital/withdraw/apply/"],
    ["a matrix parameter", "/sapi/v1/capital/withdraw/apply;jsessionid=1"],
    ["a percent-encoded letter", "/sapi/v1/capital/withdr%61w/apply"],
  ])("H87 still classifies a withdrawal spelled with %s as transfer", (_how, path) => {
    expect(classOf("binance", "POST", path)).toBe("transfer");
  });

  it("H87 refuses to classify a path whose escapes do not decode", () => {
    expect(classificationPath("/a/%E0%A4%A")).toBeUndefined();
    expect(classificationPath("relative")).toBeUndefined();
    expect(classificationPath("/A/b;c/")).toBe("/a/b");
  });
});

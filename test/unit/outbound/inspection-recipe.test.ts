import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config/config.js";
import { evaluateInspection, type InspectionRecipe } from "../../../src/outbound/inspection-recipe.js";
import { parseProviderRegistry } from "../../../src/outbound/provider-registry.js";
import { brokerErrorThrownBy } from "../../support/broker-errors.js";

const SHIPPED: unknown = JSON.parse(
  readFileSync(new URL("../../../providers/providers.json", import.meta.url), "utf8"),
);
const registry = parseProviderRegistry(SHIPPED, { production: true });
const recipeOf = (id: string): InspectionRecipe => {
  const recipe = registry.get(id)?.definition.inspection;
  if (recipe === undefined) throw new Error(`${id} has no inspection recipe`);
  return recipe;
};
const fields = (entries: Record<string, string>) =>
  new Map(Object.entries(entries).map(([k, v]) => [k, Buffer.from(v)]));

describe("shipped inspection recipes", () => {
  it("H101 Stripe: an unrestricted live secret key is dangerous, a restricted key is not (no request)", () => {
    const live = evaluateInspection(recipeOf("stripe"), fields({ api_key: "sk_live_abc123" }), undefined);
    expect(live.dangerous.map((d) => d.permission)).toEqual(["unrestricted-live-key"]);
    expect(live.dangerous[0]?.message).toContain("create a restricted key");
    const restricted = evaluateInspection(
      recipeOf("stripe"),
      fields({ api_key: "rk_live_abc123" }),
      undefined,
    );
    expect(restricted).toEqual({ permissions: ["restricted-live-key"], dangerous: [] });
  });

  it("H101 GitHub: reads X-OAuth-Scopes and flags credential and webhook scopes", () => {
    const answer = (scopes: string) => ({
      status: 200,
      headers: [["x-oauth-scopes", scopes]] as Array<[string, string]>,
      body: Buffer.from("{}"),
    });
    const plain = evaluateInspection(recipeOf("github"), fields({ token: "t" }), answer("repo, read:org"));
    expect(plain).toEqual({ permissions: ["read:org", "repo"], dangerous: [] });
    const keys = evaluateInspection(
      recipeOf("github"),
      fields({ token: "t" }),
      answer("repo, admin:public_key"),
    );
    expect(keys.dangerous.map((d) => d.permission)).toEqual(["admin:public_key"]);
    // A fine-grained token sends no scopes header: nothing read, nothing flagged.
    expect(evaluateInspection(recipeOf("github"), fields({ token: "t" }), answer(""))).toEqual({
      permissions: [],
      dangerous: [],
    });
  });

  it("H103 a provider refusing the key is failed_precondition; 429 and 5xx are unavailable; unreadable is unavailable", () => {
    const recipe = recipeOf("binance");
    const at =
      (status: number, body = "{}") =>
      () =>
        evaluateInspection(recipe, fields({}), { status, headers: [], body: Buffer.from(body) });
    expect(brokerErrorThrownBy(at(401)).code).toBe("failed_precondition");
    expect(brokerErrorThrownBy(at(429)).code).toBe("unavailable");
    expect(brokerErrorThrownBy(at(502)).code).toBe("unavailable");
    expect(brokerErrorThrownBy(at(200, "<html>")).code).toBe("unavailable");
  });
});

describe("registry and configuration checks", () => {
  it("H100 refuses a dangerous rule without a message and an inspection path outside pathPatterns", () => {
    const doc = structuredClone(SHIPPED) as { providers: Array<Record<string, unknown>> };
    const binance = doc.providers.find((p) => p.id === "binance") as Record<string, unknown>;
    binance.inspection = {
      method: "GET",
      path: "/elsewhere/x",
      rules: [
        {
          from: "json",
          pointer: "/enableWithdrawals",
          equals: true,
          permission: "withdraw",
          dangerous: true,
        },
      ],
    };
    const err = brokerErrorThrownBy(() => parseProviderRegistry(doc, { production: true }));
    expect(err.message).toContain("a dangerous rule needs a message");
    expect(err.message).toContain('inspection.path "/elsewhere/x" is not allowed by pathPatterns');
  });

  it("H102 reads KEYBROKER_INSPECTION_RELAX as a list of provider ids and refuses anything else", () => {
    const base = {
      KEYBROKER_KEYRING: "aws-kms",
      KEYBROKER_KMS_KEY_ID: "alias/k",
      AWS_REGION: "eu-west-1",
      DATABASE_URL: "postgres://db/keybroker",
      AUTH0_ISSUER: "https://issuer.example/",
      AUTH0_AUDIENCE: "aud",
      AUTH0_REQUIRED_PERMISSION: "use:keybroker",
    };
    expect(loadConfig(base).inspectionRelaxed).toEqual([]);
    expect(loadConfig({ ...base, KEYBROKER_INSPECTION_RELAX: "binance, github" }).inspectionRelaxed).toEqual([
      "binance",
      "github",
    ]);
    expect(() => loadConfig({ ...base, KEYBROKER_INSPECTION_RELAX: "Binance;rm" })).toThrow(
      /KEYBROKER_INSPECTION_RELAX/,
    );
  });
});

import path from "node:path";
import { fileURLToPath } from "node:url";
import { cruise, type ICruiseResult, type IViolation } from "dependency-cruiser";
import extractDepcruiseOptions from "dependency-cruiser/config-utl/extract-depcruise-options";
import extractTSConfig from "dependency-cruiser/config-utl/extract-ts-config";
import { beforeAll, describe, expect, it } from "vitest";

// The same rules `npm run lint:deps` runs in CI, applied through dependency-cruiser's API.
const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
const fixtureRoot = fileURLToPath(new URL("./fixture/", import.meta.url));

interface Finding {
  rule: string;
  from: string;
  to: string;
}

/** Cruises `src/` under `baseDir` with the repository's rules and returns every violation. */
async function violationsUnder(baseDir: string): Promise<Finding[]> {
  const options = await extractDepcruiseOptions(path.join(repoRoot, ".dependency-cruiser.cjs"));
  const tsConfig = extractTSConfig(path.join(repoRoot, "tsconfig.json"));
  const reported = await cruise(["src"], { ...options, baseDir }, {}, { tsConfig });
  const result: ICruiseResult | string = reported.output;
  if (typeof result === "string") throw new Error("dependency-cruiser returned a formatted report");
  return (result.summary.violations as IViolation[]).map((v) => ({
    rule: v.rule.name,
    from: v.from,
    to: v.to,
  }));
}

describe("layering rules (.dependency-cruiser.cjs)", () => {
  it("src/ imports only downwards, with no cycle", async () => {
    expect(await violationsUnder(repoRoot)).toEqual([]);
  });

  describe("on a fixture with one deliberate violation per rule", () => {
    let fixtureFindings: Finding[] = [];
    // One cruise for all the cases below: it takes a few seconds.
    beforeAll(async () => {
      fixtureFindings = await violationsUnder(fixtureRoot);
    });

    it.each<Finding>([
      { rule: "store-never-decrypts", from: "src/store/decrypting.repository.ts", to: "src/keys/keyring.ts" },
      {
        rule: "store-never-decrypts",
        from: "src/store/decrypting.repository.ts",
        to: "src/crypto/envelope.ts",
      },
      {
        rule: "layer-storage-and-primitives-imports-only-down",
        from: "src/store/decrypting.repository.ts",
        to: "src/keys/keyring.ts",
      },
      // Built-ins resolve to their bare name, whatever the spelling in the import.
      { rule: "crypto-does-no-io", from: "src/crypto/key-file.ts", to: "fs" },
      { rule: "crypto-is-pure-src", from: "src/crypto/key-file.ts", to: "src/store/users.repository.ts" },
      {
        rule: "api-never-imports-store",
        from: "src/api/rpc/direct-query-handlers.ts",
        to: "src/store/users.repository.ts",
      },
      {
        rule: "transport-does-not-know-rpcs",
        from: "src/api/transport/server.ts",
        to: "src/api/rpc/secret-handlers.ts",
      },
      {
        rule: "layer-capabilities-imports-only-down",
        from: "src/auth/authenticator.ts",
        to: "src/secrets/secret-service.ts",
      },
      {
        rule: "only-cli-imports-the-composition-root",
        from: "src/config/config.ts",
        to: "src/app/create-app.ts",
      },
      { rule: "no-circular", from: "src/outbound/request-plan.ts", to: "src/outbound/request-signer.ts" },
    ])("reports $rule for $from -> $to", (expected) => {
      expect(fixtureFindings).toContainEqual(expected);
    });

    it("reports nothing for the imports that follow the map", () => {
      const allowedSources = [
        "src/crypto/envelope.ts",
        "src/store/users.repository.ts",
        "src/secrets/secret-service.ts",
        "src/api/rpc/secret-handlers.ts",
        "src/app/create-app.ts",
      ];
      expect(fixtureFindings.filter((f) => allowedSources.includes(f.from))).toEqual([]);
    });
  });
});

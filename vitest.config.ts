import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts", "src/**/*.test.ts"],
    environment: "node",
    globalSetup: ["test/support/global-setup.ts"],
    // Catalogue E50: every test file's stdout/stderr is swept for canaries, tokens and caller keys.
    // Property tests (fast-check) run from a fixed, overridable seed: test/support/property-seed.ts.
    setupFiles: ["test/support/leak-sweep-hook.ts", "test/support/property-seed.ts"],
    // Every timestamp is timestamptz, but pg and PGlite serialise bare Dates differently: pin UTC.
    env: { TZ: "UTC" },
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Catalogue W5: every item the security catalogue marks tested must have a PASSED test.
    reporters: ["default", "./test/support/catalogue-reporter.ts"],
    pool: "forks",
    // Two cores: more workers only thrash (PGlite start-up alone is CPU-heavy).
    maxWorkers: 2,
  },
});

import { execFile } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGrpcClients, unary } from "../support/grpc-client.js";
import { POSTGRES_SKIP_REASON } from "../support/skip-reasons.js";
import { createTestDatabase, type TestDatabase } from "../support/test-database.js";
import {
  type BrokerChild,
  type BrokerDependencies,
  spawnBroker,
  startBrokerDependencies,
} from "./fault-fixture.js";

// Issue 16 item 8: PGlite is an optional dependency the image leaves out, so `serve` on a
// Postgres URL must never import it. The child runs with test/support/forbid-pglite.mjs
// preloaded, which makes every PGlite import throw, as its absence would.
const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const FORBID = join(ROOT, "test/support/forbid-pglite.mjs");
const run = promisify(execFile);

describe("the guard standing in for the image's missing PGlite", () => {
  it("K241 refuses PGlite and the broker's PGlite module, directly and through tsx", async () => {
    const attempts = [
      ["--import", FORBID, "--input-type=module", "-e", "await import('@electric-sql/pglite')"],
      [
        "--import",
        FORBID,
        "--import",
        "tsx",
        "--input-type=module",
        "-e",
        "const { openDatabase } = await import('./src/store/database.ts'); await openDatabase({ kind: 'pglite', dataDir: undefined }, console)",
      ],
    ];
    for (const args of attempts) {
      const failed = await run(process.execPath, args, { cwd: ROOT }).then(
        () => "",
        (err: { stderr?: string }) => err.stderr ?? "",
      );
      expect(failed).toMatch(/forbidden import of \S*pglite/);
    }
  });
});

const missing = !process.env.TEST_DATABASE_URL;
describe.skipIf(missing)(
  missing
    ? `K240 serve on Postgres without PGlite (${POSTGRES_SKIP_REASON})`
    : "K240 serve on Postgres without PGlite",
  () => {
    let deps: BrokerDependencies;
    let database: TestDatabase;
    let broker: BrokerChild;

    beforeAll(async () => {
      deps = await startBrokerDependencies();
      database = await createTestDatabase("postgres");
      broker = await spawnBroker(deps, database.url ?? "", { NODE_OPTIONS: `--import=${FORBID}` });
    }, 120_000);

    afterAll(async () => {
      await broker?.close();
      await database?.close();
      await deps?.close();
    });

    it("K240 serve on a Postgres URL starts and answers without ever importing PGlite", async () => {
      const clients = createGrpcClients(broker.grpcAddress);
      try {
        const token = await deps.issuer.sign({ sub: "auth0|no-pglite-canary" });
        const listed = await unary(
          clients.secrets,
          "ListSecrets",
          {},
          { callerKey: broker.callerKey, bearerToken: token },
        );
        expect(listed.response.secrets).toEqual([]);
      } finally {
        clients.close();
      }
      expect(broker.output()).not.toMatch(/forbidden import/);
    });
  },
);

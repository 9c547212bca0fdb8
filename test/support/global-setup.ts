import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { Kysely } from "kysely";
import { PGliteDialect } from "kysely-pglite-dialect";
import type { TestProject } from "vitest/node";
import { migrateToLatest } from "../../src/store/migrate.js";
import type { Database } from "../../src/store/schema.js";

declare module "vitest" {
  export interface ProvidedContext {
    pgliteTemplate: string;
  }
}

/**
 * PGlite's cold start costs seconds; loading a migrated data directory costs ~0.5 s.
 * So the run migrates one instance, dumps it, and every test file loads that template.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const dir = await mkdtemp(join(tmpdir(), "keybroker-test-"));
  const pglite = await PGlite.create();
  const db = new Kysely<Database>({ dialect: new PGliteDialect(pglite) });
  await migrateToLatest(db);
  const dump = await pglite.dumpDataDir("none");
  const path = join(dir, "pglite-template.tar");
  await writeFile(path, Buffer.from(await dump.arrayBuffer()));
  await db.destroy(); // also closes the PGlite instance
  project.provide("pgliteTemplate", path);
  return async () => {
    await rm(dir, { recursive: true, force: true });
  };
}

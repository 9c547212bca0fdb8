import { PGlite } from "@electric-sql/pglite";
import { Kysely } from "kysely";
import { PGliteDialect } from "kysely-pglite-dialect";
import type { DatabaseHandle } from "./database-handle.js";
import { INT8_OID, parseInt8 } from "./int8.js";
import { pgliteRunner } from "./prepared.js";
import type { Database } from "./schema.js";
import { translatingDialect } from "./translating-dialect.js";

// The embedded database (development, tests). Imported only through openDatabase's dynamic
// import (or by tests), so nothing here loads on a broker that runs on a Postgres server.

/** Type parsers a PGlite instance must be created with, so it reads rows as pg does. */
export const PGLITE_PARSERS = { [INT8_OID]: parseInt8 };

/** A handle over an open PGlite instance (created with PGLITE_PARSERS); closing it closes PGlite. */
export function pgliteHandle(pglite: PGlite): DatabaseHandle {
  const db = new Kysely<Database>({ dialect: translatingDialect(new PGliteDialect(pglite)) });
  return {
    db,
    prepared: pgliteRunner(db),
    kind: "pglite",
    async listen(channel, onNotice) {
      // One process, one connection: a notice can be neither lost nor delayed, so there is
      // nothing to confirm and the subscription is never lost.
      const unsubscribe = await pglite.listen(channel, onNotice);
      return { confirm: async () => undefined, close: () => unsubscribe() };
    },
    async close() {
      await db.destroy();
      if (!pglite.closed) await pglite.close();
    },
  };
}

/** Opens PGlite in `dataDir`, or in memory. */
export async function openPglite(dataDir: string | undefined): Promise<DatabaseHandle> {
  const pglite = await PGlite.create({
    ...(dataDir === undefined ? {} : { dataDir }),
    parsers: PGLITE_PARSERS,
  });
  return pgliteHandle(pglite);
}

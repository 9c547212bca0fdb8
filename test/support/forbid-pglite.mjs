// Preloaded into a child process (`node --import <this file>` or NODE_OPTIONS) to stand in for
// the production image, which has no PGlite (Dockerfile: npm ci --omit=optional): any import of
// PGlite, its kysely dialect or the broker's PGlite module throws, naming what was imported.
import { registerHooks } from "node:module";

const FORBIDDEN = /^(@electric-sql\/pglite|kysely-pglite-dialect)(\/|$)|pglite-database\.(js|ts)$/;

registerHooks({
  resolve(specifier, context, nextResolve) {
    if (FORBIDDEN.test(specifier)) {
      throw new Error(`forbidden import of ${specifier}: the production image has no PGlite`);
    }
    return nextResolve(specifier, context);
  },
});

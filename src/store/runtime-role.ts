import { type Kysely, sql } from "kysely";
import { BrokerError } from "../errors.js";
import type { Database } from "./schema.js";

// Rows the runtime role may only add and read (M1): the trail, and its checkpoints.
const APPEND_ONLY_TABLES = ["audit_events", "audit_checkpoints"] as const;
// The chain head moves forward with every append, so it needs UPDATE; rows it could roll it
// back over stay in audit_events, where verification finds them.
const HEAD_TABLE = "audit_chain_head";
// The migrator's own tables: serve reads them to refuse a schema behind its code, nothing more.
const MIGRATION_TABLES = ["keybroker_migrations", "keybroker_migrations_lock"] as const;

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/;

/**
 * Grants the role `keybroker serve` connects as exactly what it uses (review M1): read and write
 * every table of the schema (so a table a later migration adds is covered), except INSERT/SELECT
 * only on the audit trail and its checkpoints and no DELETE on the chain head; never TRUNCATE,
 * TRIGGER or REFERENCES, and it owns nothing, so it cannot disable the audit triggers or alter
 * a table. Run by `keybroker migrate` (the owner role) after every migration; idempotent.
 */
export async function grantRuntimeRole(db: Kysely<Database>, role: string): Promise<void> {
  if (!IDENTIFIER.test(role)) throw new BrokerError("invalid_argument", "not a plain role name");
  await db.transaction().execute(async (tx) => {
    const found = (
      await sql<{ schema: string; privileged: boolean }>`
        select current_schema() as schema,
               r.rolsuper or r.rolname = current_user or pg_has_role(r.rolname, current_user, 'member')
                 as privileged
          from pg_roles r where r.rolname = ${role}`.execute(tx)
    ).rows[0];
    if (found === undefined) {
      throw new BrokerError(
        "failed_precondition",
        "KEYBROKER_RUNTIME_DB_ROLE names a role that does not exist",
      );
    }
    // A superuser, or the owner (or a member of it), keeps every owner right: no separation at all.
    if (found.privileged) {
      throw new BrokerError(
        "failed_precondition",
        "KEYBROKER_RUNTIME_DB_ROLE must be neither a superuser nor the migrating role or one of its members",
      );
    }
    const r = sql.id(role);
    const schema = sql.id(found.schema);
    const table = (name: string) => sql.table(name);
    await sql`grant usage on schema ${schema} to ${r}`.execute(tx);
    await sql`revoke all on all tables in schema ${schema} from ${r}`.execute(tx);
    await sql`grant select, insert, update, delete on all tables in schema ${schema} to ${r}`.execute(tx);
    for (const name of APPEND_ONLY_TABLES) {
      await sql`revoke update, delete on ${table(name)} from ${r}`.execute(tx);
    }
    await sql`revoke delete on ${table(HEAD_TABLE)} from ${r}`.execute(tx);
    for (const name of MIGRATION_TABLES) {
      await sql`revoke insert, update, delete on ${table(name)} from ${r}`.execute(tx);
    }
  });
}

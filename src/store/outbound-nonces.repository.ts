import { type Kysely, sql } from "kysely";
import { BrokerError } from "../errors.js";
import type { Database } from "./schema.js";

type Settled<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly err: unknown };

/**
 * Takes the secret's next nonce, max(`floor`, last + 1), and runs `send` with it inside the same
 * transaction (F1). The upsert's row lock is held until commit, so a second replica taking a
 * nonce for the same secret waits until this one's `send` settled: nonces are handed out, and
 * sent, in one order across replicas. (A row lock rather than an advisory lock: it comes with
 * the counter's own update, and a crashed holder's lock ends with its connection.)
 *
 * The transaction commits even when `send` fails: the upstream may have seen the nonce, so it
 * must never be handed out again. Waiting for the lock is bounded by `maxWaitMs`.
 *
 * Postgres only: on PGlite (one connection) a transaction held over network I/O would stall
 * every other statement; a single process orders its nonces without the database.
 */
export async function withNextOutboundNonce<T>(
  db: Kysely<Database>,
  secretId: string,
  floor: number,
  maxWaitMs: number,
  send: (nonce: number) => Promise<T>,
): Promise<T> {
  let settled: Settled<T>;
  try {
    settled = await db.transaction().execute(async (trx) => {
      // Session settings cannot be bound parameters; set_config takes them as values.
      await sql`select set_config('lock_timeout', ${`${Math.max(1, Math.ceil(maxWaitMs))}ms`}, true)`.execute(
        trx,
      );
      const row = await trx
        .insertInto("outbound_nonces")
        .values({ secret_id: secretId, last_nonce: floor })
        .onConflict((oc) =>
          oc.column("secret_id").doUpdateSet({
            last_nonce: sql<number>`greatest(excluded.last_nonce, outbound_nonces.last_nonce + 1)`,
          }),
        )
        .returning("last_nonce")
        .executeTakeFirstOrThrow();
      try {
        return { ok: true, value: await send(row.last_nonce) } as const;
      } catch (err) {
        return { ok: false, err } as const;
      }
    });
  } catch (err) {
    if (sqlState(err) === "55P03") {
      throw new BrokerError("unavailable", "another replica is still using this secret; retry later", {
        cause: err,
      });
    }
    throw err;
  }
  if (!settled.ok) throw settled.err;
  return settled.value;
}

function sqlState(err: unknown): string | undefined {
  if (typeof err !== "object" || err === null || !("code" in err)) return undefined;
  return typeof err.code === "string" ? err.code : undefined;
}

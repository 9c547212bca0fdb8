import type { Kysely } from "kysely";
import type { Database } from "./schema.js";

export interface SealedStateValue {
  readonly wrapped: Uint8Array;
  readonly masterKeyId: string;
}

export async function findBrokerState(
  db: Kysely<Database>,
  name: string,
): Promise<SealedStateValue | undefined> {
  const row = await db
    .selectFrom("broker_state")
    .select(["wrapped_value", "master_key_id"])
    .where("name", "=", name)
    .executeTakeFirst();
  return row && { wrapped: row.wrapped_value, masterKeyId: row.master_key_id };
}

/** Inserts unless another replica won the race; returns whether this call's value was stored. */
export async function insertBrokerStateIfAbsent(
  db: Kysely<Database>,
  name: string,
  value: SealedStateValue,
): Promise<boolean> {
  const result = await db
    .insertInto("broker_state")
    .values({ name, wrapped_value: value.wrapped, master_key_id: value.masterKeyId })
    .onConflict((oc) => oc.column("name").doNothing())
    .executeTakeFirst();
  return (result.numInsertedOrUpdatedRows ?? 0n) > 0n;
}

import type { Kysely } from "kysely";
import { PEPPER_STATE } from "../keys/pepper.js";
import { findBrokerState } from "../store/broker-state.repository.js";
import { countUsersByMasterKey } from "../store/rewrap.repository.js";
import type { Database } from "../store/schema.js";

/** Which master keys the stored data keys depend on: a key may be retired only when it has no row. */
export interface KeyStatus {
  /** Users' data keys per master key id, in key id order. */
  readonly users: ReadonlyMap<string, number>;
  /** The master key sealing the user-ref pepper; undefined before the broker's first start. */
  readonly pepperKeyId: string | undefined;
}

export async function readKeyStatus(db: Kysely<Database>): Promise<KeyStatus> {
  const [users, pepper] = await Promise.all([countUsersByMasterKey(db), findBrokerState(db, PEPPER_STATE)]);
  return { users, pepperKeyId: pepper?.masterKeyId };
}

/**
 * The `keys status` table: one line per master key with its users and whether it seals the
 * pepper; keys outside `acceptedKeyIds` (when given) are marked retired, with a warning
 * when rows still depend on them (they would be refused).
 */
export function formatKeyStatus(status: KeyStatus, acceptedKeyIds?: ReadonlySet<string>): string {
  const keyIds = [...new Set([...status.users.keys(), ...(status.pepperKeyId ? [status.pepperKeyId] : [])])];
  keyIds.sort();
  if (keyIds.length === 0) return "no data keys stored yet\n";
  const width = Math.max("master key".length, ...keyIds.map((id) => id.length));
  const lines = [`${"master key".padEnd(width)}  ${"users".padStart(9)}  pepper`];
  let retiredInUse = false;
  for (const keyId of keyIds) {
    const retired = acceptedKeyIds !== undefined && !acceptedKeyIds.has(keyId);
    if (retired) retiredInUse = true;
    const users = status.users.get(keyId) ?? 0;
    const pepper = status.pepperKeyId === keyId ? "yes" : "";
    lines.push(
      `${keyId.padEnd(width)}  ${users.toLocaleString("en-US").padStart(9)}  ${pepper.padEnd(6)}${retired ? "  RETIRED" : ""}`.trimEnd(),
    );
  }
  const total = [...status.users.values()].reduce((sum, n) => sum + n, 0);
  lines.push(`${"total".padEnd(width)}  ${total.toLocaleString("en-US").padStart(9)}`);
  if (retiredInUse) {
    lines.push(
      "",
      "warning: rows above are wrapped under a retired master key and will be refused; run rewrap",
    );
  }
  return `${lines.join("\n")}\n`;
}

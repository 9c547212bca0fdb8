import type { Kysely } from "kysely";
import { PEPPER_STATE } from "../keys/pepper.js";
import { findBrokerState } from "../store/broker-state.repository.js";
import { countOAuthAppsByMasterKey } from "../store/oauth-apps.repository.js";
import { countUsersByMasterKey } from "../store/rewrap.repository.js";
import type { Database } from "../store/schema.js";

/** Which master keys the stored data keys depend on: a key may be retired only when it has no row. */
export interface KeyStatus {
  /** Users' data keys per master key id, in key id order. */
  readonly users: ReadonlyMap<string, number>;
  /** OAuth apps' data keys (their client secrets') per master key id. */
  readonly oauthApps: ReadonlyMap<string, number>;
  /** The master key sealing the user-ref pepper; undefined before the broker's first start. */
  readonly pepperKeyId: string | undefined;
}

export async function readKeyStatus(db: Kysely<Database>): Promise<KeyStatus> {
  const [users, oauthApps, pepper] = await Promise.all([
    countUsersByMasterKey(db),
    countOAuthAppsByMasterKey(db),
    findBrokerState(db, PEPPER_STATE),
  ]);
  return { users, oauthApps, pepperKeyId: pepper?.masterKeyId };
}

/** Every master key some row depends on, sorted. */
export function keyIdsInUse(status: KeyStatus): string[] {
  const ids = new Set([...status.users.keys(), ...status.oauthApps.keys()]);
  if (status.pepperKeyId !== undefined) ids.add(status.pepperKeyId);
  return [...ids].sort();
}

const sum = (counts: ReadonlyMap<string, number>) => [...counts.values()].reduce((a, n) => a + n, 0);

/**
 * The `keys status` table: one line per master key with its users, its OAuth apps (a column shown
 * only when there are any, so a broker without them reads as before) and whether it seals the
 * pepper; keys outside `acceptedKeyIds` (when given) are marked retired, with a warning when rows
 * still depend on them (they would be refused).
 */
export function formatKeyStatus(status: KeyStatus, acceptedKeyIds?: ReadonlySet<string>): string {
  const keyIds = keyIdsInUse(status);
  if (keyIds.length === 0) return "no data keys stored yet\n";
  const withApps = status.oauthApps.size > 0;
  const apps = (n: number | string) => (withApps ? `${String(n).padStart(10)}  ` : "");
  const count = (n: number) => n.toLocaleString("en-US");
  const width = Math.max("master key".length, ...keyIds.map((id) => id.length));
  const lines = [`${"master key".padEnd(width)}  ${"users".padStart(9)}  ${apps("oauth apps")}pepper`];
  let retiredInUse = false;
  for (const keyId of keyIds) {
    const retired = acceptedKeyIds !== undefined && !acceptedKeyIds.has(keyId);
    if (retired) retiredInUse = true;
    const users = count(status.users.get(keyId) ?? 0);
    const oauthApps = count(status.oauthApps.get(keyId) ?? 0);
    const pepper = status.pepperKeyId === keyId ? "yes" : "";
    lines.push(
      `${keyId.padEnd(width)}  ${users.padStart(9)}  ${apps(oauthApps)}${pepper.padEnd(6)}${retired ? "  RETIRED" : ""}`.trimEnd(),
    );
  }
  lines.push(
    `${"total".padEnd(width)}  ${count(sum(status.users)).padStart(9)}  ${apps(count(sum(status.oauthApps)))}`.trimEnd(),
  );
  if (retiredInUse) {
    lines.push(
      "",
      "warning: rows above are wrapped under a retired master key and will be refused; run rewrap",
    );
  }
  return `${lines.join("\n")}\n`;
}

import type { Kysely } from "kysely";
import { findBrokerState, insertBrokerStateIfAbsent } from "../store/broker-state.repository.js";
import type { Database } from "../store/schema.js";
import type { Keyring } from "./keyring.js";

export const PEPPER_STATE = "user_ref_pepper";
export const PEPPER_CONTEXT = { purpose: "keybroker:user-ref-pepper" } as const;

/**
 * The pepper keys user refs: HMAC(pepper, issuer | sub). It is generated once by the
 * keyring and stored only wrapped, so a stolen database cannot link a row to a user (I5)
 * and cannot even test a guessed `sub`. It lives in memory for the process lifetime.
 */
export async function loadOrCreatePepper(db: Kysely<Database>, keyring: Keyring): Promise<Buffer> {
  let stored = await findBrokerState(db, PEPPER_STATE);
  if (stored === undefined) {
    const generated = await keyring.generateDataKey(PEPPER_CONTEXT);
    generated.plaintext.fill(0);
    // Another replica may have won the race: always read back the stored value.
    await insertBrokerStateIfAbsent(db, PEPPER_STATE, {
      wrapped: generated.wrapped,
      masterKeyId: generated.keyId,
    });
    stored = await findBrokerState(db, PEPPER_STATE);
    if (stored === undefined) throw new Error("pepper row vanished after insert");
  }
  // The master key the row names goes to the KMS, which refuses any other (M2).
  const { plaintext } = await keyring.decrypt(
    { wrapped: stored.wrapped, keyId: stored.masterKeyId },
    PEPPER_CONTEXT,
  );
  return plaintext;
}

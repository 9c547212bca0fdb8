import type { Kysely } from "kysely";
import { BrokerError } from "../errors.js";
import type { UserDataKeys } from "../keys/user-data-keys.js";
import { deleteUserAuthorizations } from "../store/oauth-authorizations.repository.js";
import type { Database } from "../store/schema.js";
import { findUserKey } from "../store/users.repository.js";

export interface UserShredder {
  /** Destroys the user's data key and every secret; returns how many secrets were destroyed. */
  shred(userRef: Buffer): Promise<number>;
}

/**
 * Crypto-shredding: the user's wrapped data key is deleted (and with it, by cascade, every
 * secret row, and explicitly their pending OAuth authorizations), and the in-process plaintext
 * copy is dropped from the cache. Without the data key
 * no ciphertext of theirs can be opened again. Backups still hold the wrapped key until they
 * age out: docs/operations.md says how to close that window (rotate and disable the master key).
 */
export function createUserShredder(deps: {
  db: Kysely<Database>;
  userDataKeys: Pick<UserDataKeys, "forget">;
}): UserShredder {
  return {
    async shred(userRef) {
      const stored = await findUserKey(deps.db, userRef);
      if (stored === undefined) throw new BrokerError("not_found", "no such user");
      const destroyed = await deps.db.transaction().execute(async (trx) => {
        const count = await trx
          .selectFrom("secrets")
          .select((eb) => eb.fn.countAll<string | number | bigint>().as("n"))
          .where("user_ref", "=", userRef)
          .executeTakeFirstOrThrow();
        await trx.deleteFrom("users").where("user_ref", "=", userRef).execute();
        // Their pending OAuth authorizations (no foreign key: a user may start one before having
        // a data key) go too, so a consent finished after the shred stores nothing.
        await deleteUserAuthorizations(trx, userRef);
        return Number(count.n);
      });
      deps.userDataKeys.forget(userRef, stored);
      return destroyed;
    },
  };
}

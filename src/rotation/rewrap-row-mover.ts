import type { Kysely } from "kysely";
import { decodePinEnvelope, isPinEnvelope, withWrappedShare } from "../crypto/pin-envelope.js";
import { BrokerError, isBrokerError } from "../errors.js";
import type { EncryptionContext, Keyring, WrappedKey } from "../keys/keyring.js";
import { oauthAppContext } from "../keys/oauth-app-context.js";
import { PEPPER_CONTEXT, PEPPER_STATE } from "../keys/pepper.js";
import { pinShareContext, userKeyContext } from "../keys/user-data-keys.js";
import type { Logger } from "../log/logger.js";
import { findBrokerState } from "../store/broker-state.repository.js";
import { asBuffer } from "../store/bytes.js";
import {
  compareAndSetOAuthAppKey,
  findOAuthApp,
  findOAuthAppsNotOnKey,
  type StoredOAuthApp,
} from "../store/oauth-apps.repository.js";
import {
  compareAndSetBrokerState,
  compareAndSetUserKeys,
  findUsersNotOnKey,
  findWrappedUserKey,
  type UserKeyChange,
  type WrappedUserKey,
} from "../store/rewrap.repository.js";
import type { Database } from "../store/schema.js";
import type { KmsRetry } from "./kms-retry.js";
import { createWriteBatcher } from "./write-batcher.js";

/** What became of one row: moved, already moved (or gone), or left as it is. */
export type RowOutcome = "rewrapped" | "skipped" | "failed";

export interface RewrapRowMoverDeps {
  readonly db: Kysely<Database>;
  readonly keyring: Keyring;
  readonly logger: Logger;
  /** Every ReEncrypt goes through it (rate limit, backoff). */
  readonly kms: KmsRetry;
  /** A key ARN or "local:N", as rows record it. */
  readonly targetKeyId: string;
  /** KMS calls in flight at once; sizes the write batches. */
  readonly concurrency: number;
}

export interface RewrapRowMover {
  /** Moves one user's data key to the target. */
  rewrapUser(row: WrappedUserKey): Promise<RowOutcome>;
  /** Moves the sealed pepper to the target; undefined when there is none or it is already there. */
  rewrapPepper(): Promise<RowOutcome | undefined>;
  /** Moves one OAuth app's data key (its client secret's) to the target. */
  rewrapOAuthApp(app: StoredOAuthApp): Promise<RowOutcome>;
  /** One re-encryption, discarded: proves the KMS lets us read the source and use the target. */
  probe(): Promise<void>;
}

// A row whose key changes this often under us (rotations in a loop) is left for a later run.
const MAX_COMPARE_AND_SET_ATTEMPTS = 5;
// Stored keys are written in batches of rows that finish together (see write-batcher.ts);
// a row waits at most this long for company.
const WRITE_BATCH_MAX = 100;
const WRITE_BATCH_DELAY_MS = 2;

interface StoredWrappedKey {
  readonly wrapped: Buffer;
  readonly masterKeyId: string;
}

/** Re-encrypts rows under the target master key and writes them back with compare-and-set. */
export function createRewrapRowMover(deps: RewrapRowMoverDeps): RewrapRowMover {
  const { db, keyring, logger, kms, targetKeyId } = deps;
  const writes = createWriteBatcher({
    maxBatch: Math.min(WRITE_BATCH_MAX, Math.ceil(deps.concurrency / 2)),
    maxDelayMs: WRITE_BATCH_DELAY_MS,
    writeBatch: async (changes: readonly UserKeyChange[]) => {
      const written = await compareAndSetUserKeys(db, changes);
      return changes.map((change) => written.has(change.userRef.toString("hex")));
    },
  });

  // The row's master key id is the source the KMS must find (SourceKeyId): a row whose bytes
  // were made under another key fails as data_loss and is left for an operator (M2).
  async function reEncrypt(stored: StoredWrappedKey, context: EncryptionContext): Promise<WrappedKey> {
    const wrapped: WrappedKey = { wrapped: stored.wrapped, keyId: stored.masterKeyId };
    // Not given `signal`: a call in flight finishes and its row is stored, so a stopped
    // job never leaves a row re-encrypted but not written (the SDK's timeouts bound it).
    const rewrapped = await kms.call(() => keyring.reEncrypt(wrapped, context, targetKeyId));
    if (rewrapped.keyId !== targetKeyId) {
      // Storing it under another id would make the row look stale forever (e.g. an alias given).
      throw new BrokerError(
        "failed_precondition",
        `the key management service wrapped under ${rewrapped.keyId}, not ${targetKeyId}; pass the key's ARN`,
      );
    }
    return rewrapped;
  }

  /**
   * A user's row: a PIN user's holds an envelope (issue 14 item 4) whose KMS-wrapped share is what
   * moves to the target key; the sealed data key inside stays as it is, and no PIN is needed.
   */
  async function reEncryptUserKey(stored: StoredWrappedKey, userRef: Buffer): Promise<WrappedKey> {
    if (!isPinEnvelope(stored.wrapped)) return reEncrypt(stored, userKeyContext(userRef));
    const { wrappedShare } = decodePinEnvelope(stored.wrapped);
    const share = await reEncrypt(
      { wrapped: wrappedShare, masterKeyId: stored.masterKeyId },
      pinShareContext(userRef),
    );
    return { wrapped: withWrappedShare(stored.wrapped, share.wrapped), keyId: share.keyId };
  }

  /** Moves one row to the target with compare-and-set; a concurrent change is re-read, never overwritten. */
  async function rewrapRow<Row extends StoredWrappedKey>(
    first: Row,
    reEncryptRow: (stored: Row) => Promise<WrappedKey>,
    store: (expected: Row, rewrapped: WrappedKey) => Promise<boolean>,
    reread: () => Promise<Row | undefined>,
  ): Promise<RowOutcome> {
    let current: Row | undefined = first;
    for (let attempt = 0; attempt < MAX_COMPARE_AND_SET_ATTEMPTS; attempt += 1) {
      if (current === undefined || current.masterKeyId === targetKeyId) return "skipped";
      let rewrapped: WrappedKey;
      try {
        rewrapped = await reEncryptRow(current);
      } catch (err) {
        if (!(isBrokerError(err) && err.code === "data_loss")) throw err;
        // Tampered or corrupted: nothing can rewrap it. Leave it for an operator (I6 fails closed).
        logger.error({ code: err.code }, "a stored wrapped key did not authenticate; left unchanged");
        return "failed";
      }
      if (await store(current, rewrapped)) return "rewrapped";
      current = await reread();
    }
    logger.warn("a wrapped key kept changing during rewrap; left for the next run");
    return "failed";
  }

  function rewrapUser(row: WrappedUserKey): Promise<RowOutcome> {
    return rewrapRow(
      { wrapped: row.wrappedDataKey, masterKeyId: row.masterKeyId },
      (stored) => reEncryptUserKey(stored, row.userRef),
      (expected, rewrapped) =>
        writes.write({
          userRef: row.userRef,
          expected: expected.wrapped,
          wrappedDataKey: rewrapped.wrapped,
          masterKeyId: rewrapped.keyId,
        }),
      async () => {
        const now = await findWrappedUserKey(db, row.userRef);
        return now && { wrapped: now.wrappedDataKey, masterKeyId: now.masterKeyId };
      },
    );
  }

  async function readPepper(): Promise<StoredWrappedKey | undefined> {
    const state = await findBrokerState(db, PEPPER_STATE);
    return state && { wrapped: asBuffer(state.wrapped), masterKeyId: state.masterKeyId };
  }

  async function rewrapPepper(): Promise<RowOutcome | undefined> {
    const pepper = await readPepper();
    if (pepper === undefined || pepper.masterKeyId === targetKeyId) return undefined;
    return rewrapRow(
      pepper,
      (stored) => reEncrypt(stored, PEPPER_CONTEXT),
      (expected, rewrapped) =>
        compareAndSetBrokerState(db, {
          name: PEPPER_STATE,
          expected: expected.wrapped,
          wrapped: rewrapped.wrapped,
          masterKeyId: rewrapped.keyId,
        }),
      readPepper,
    );
  }

  // An app's row carries what its context names; a concurrent rotate may change all three.
  type AppRow = StoredWrappedKey & Pick<StoredOAuthApp, "provider" | "version" | "clientId">;
  const appRow = (app: StoredOAuthApp): AppRow => ({
    wrapped: asBuffer(app.wrappedKey),
    masterKeyId: app.masterKeyId,
    provider: app.provider,
    version: app.version,
    clientId: app.clientId,
  });
  const reEncryptApp = (stored: AppRow) =>
    reEncrypt(stored, oauthAppContext(stored.provider, stored.version, stored.clientId));

  function rewrapOAuthApp(app: StoredOAuthApp): Promise<RowOutcome> {
    return rewrapRow(
      appRow(app),
      reEncryptApp,
      (expected, rewrapped) =>
        compareAndSetOAuthAppKey(db, {
          provider: expected.provider,
          version: expected.version,
          expectedMasterKeyId: expected.masterKeyId,
          wrappedKey: rewrapped.wrapped,
          masterKeyId: rewrapped.keyId,
        }),
      async () => {
        const now = await findOAuthApp(db, app.provider);
        return now && appRow(now);
      },
    );
  }

  async function probe(): Promise<void> {
    const pepper = await readPepper();
    if (pepper !== undefined && pepper.masterKeyId !== targetKeyId) {
      await reEncrypt(pepper, PEPPER_CONTEXT);
      return;
    }
    const [app] = await findOAuthAppsNotOnKey(db, targetKeyId);
    if (app !== undefined) {
      await reEncryptApp(appRow(app));
      return;
    }
    const [user] = await findUsersNotOnKey(db, { targetKeyId, after: undefined, limit: 1 });
    if (user !== undefined) {
      await reEncryptUserKey(
        { wrapped: asBuffer(user.wrappedDataKey), masterKeyId: user.masterKeyId },
        user.userRef,
      );
    }
  }

  return { rewrapUser, rewrapPepper, rewrapOAuthApp, probe };
}

import { randomUUID } from "node:crypto";
import type { Kysely } from "kysely";
import type { UserIdentity } from "../auth/identity.js";
import { open, type SecretBinding, seal } from "../crypto/envelope.js";
import { decodeFields, encodeFields } from "../crypto/field-codec.js";
import { headMac, verifyHead } from "../crypto/secret-head.js";
import { BrokerError } from "../errors.js";
import { pinSessionOf } from "../keys/pin-sessions.js";
import type { UserDataKeys } from "../keys/user-data-keys.js";
import { fingerprintFields, maskedHint } from "../keys/user-ref.js";
import { isOperationClass, type OperationClass } from "../policy/operation-class.js";
import { compareGrants, type GrantChange, normalizeGrant } from "../policy/operation-grant.js";
import { asBuffer, isUniqueViolation } from "../store/bytes.js";
import { type PageLimits, type PageRequest, pageSizeOf, positionOfPageToken } from "../store/keyset-page.js";
import { setConnectionState } from "../store/oauth-connections.repository.js";
import type { PreparedRunner } from "../store/prepared.js";
import type { Database } from "../store/schema.js";
import * as secretsRepo from "../store/secrets.repository.js";
import { addEncryptions, lockUserKey } from "../store/users.repository.js";
import type { KeyInspection, KeyInspector } from "./key-inspector.js";
import { type PutSecretInput, SECRET_LIMITS } from "./secret-input.js";

/** What a caller may know about a secret (SPEC I1): never a value. */
export interface SecretMetadata {
  readonly id: string;
  readonly provider: string;
  readonly label: string;
  readonly version: number;
  readonly fieldNames: readonly string[];
  readonly hint: string;
  readonly fingerprint: string;
  readonly createdAt: Date;
  readonly updatedAt: Date;
  readonly lastUsedAt: Date | null;
  /** What the last inspection of the current key found (issue 13 item 5). */
  readonly inspection: secretsRepo.StoredInspection;
  /** The operation classes the secret may be used for (its sealed grant, SPEC I10). */
  readonly grant: readonly OperationClass[];
  /** An OAuth connection's state and granted scopes (issue 15); null for other secrets. */
  readonly connection: secretsRepo.StoredConnection | null;
}

/** What PutSecret stored, and how its grant compares with the one it replaced (for the audit row). */
export interface PutSecretOutcome extends SecretMetadata {
  readonly grantChange: GrantChange;
}

/** A secret opened for use by the proxy. The holder zeroes every field buffer when done. */
export interface OpenedSecret {
  readonly id: string;
  readonly provider: string;
  readonly fields: Map<string, Buffer>;
}

/** Which providers exist and the fields each needs (the provider registry, once loaded). */
export interface ProviderCatalog {
  requiredFields(providerId: string): readonly string[] | undefined;
  /** The grant of a secret stored without one (never a dangerous class; the registry checks). */
  defaultGrant(providerId: string): readonly OperationClass[] | undefined;
  /** Whether the provider's secrets are OAuth connections, stored only by the connect flow. */
  isOAuth?(providerId: string): boolean;
}

/** ListSecrets: an optional provider filter and a page (page_size 0 means SECRETS_PAGE.defaultSize). */
export interface SecretListQuery extends PageRequest {
  readonly provider: string | undefined;
}

export interface SecretPage {
  readonly secrets: SecretMetadata[];
  /** Empty on the last page. */
  readonly nextPageToken: string;
}

// Secret ids are uuids; a token naming anything else was not issued by ListSecrets.
const SECRET_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Larger page sizes are clamped to the maximum, as for ListSecretUses. */
export const SECRETS_PAGE: PageLimits = { defaultSize: 100, maxSize: 500 };

export interface SecretService {
  put(user: UserIdentity, input: PutSecretInput, signal: AbortSignal): Promise<PutSecretOutcome>;
  /** One page of the user's secrets, oldest first. */
  list(user: UserIdentity, query: SecretListQuery, signal: AbortSignal): Promise<SecretPage>;
  delete(user: UserIdentity, secretId: string): Promise<void>;
  open(user: UserIdentity, secretId: string, signal: AbortSignal): Promise<OpenedSecret>;
  /**
   * The first half of `open`: reads the user's secret, still sealed (ciphertext and wrapped key;
   * nothing is unwrapped or decrypted), so it may run before the audit trail's `started` row.
   * Rejects `not_found` for an absent OR another user's secret (I4).
   */
  fetch(user: UserIdentity, secretId: string): Promise<SealedSecret>;
  /** What another statement read for `fetch` (the proxied call's `started` commit): NOT_FOUND if nothing. */
  found(sealed: SealedSecret | undefined): SealedSecret;
  /** The second half of `open`: unwraps the user's data key and decrypts the fetched secret. */
  unseal(user: UserIdentity, sealed: SealedSecret, signal: AbortSignal): Promise<OpenedSecret>;
  /**
   * Re-runs the provider's key inspection on a fetched secret (InspectSecret) and records the
   * result: a key that now has a dangerous permission is recorded as "refused", not deleted.
   */
  inspect(user: UserIdentity, sealed: SealedSecret, signal: AbortSignal): Promise<SecretMetadata>;
}

/** A user's secret as stored: opaque until `unseal`. */
export type SealedSecret = secretsRepo.SecretForUse;

// The field whose masked tail identifies a secret to its owner, in order of preference.
const HINT_FIELDS = ["api_key", "access_token", "token", "key", "client_id"];

const NOT_FOUND = "secret not found";

export function createSecretService(deps: {
  db: Kysely<Database>;
  prepared: PreparedRunner;
  userDataKeys: UserDataKeys;
  fingerprintKey: Buffer;
  providers?: ProviderCatalog;
  /** Inspects a key before it is stored; absent: every secret is stored as "none". */
  inspector?: KeyInspector;
  /** Told of every finished inspection (metrics); must be cheap. */
  onInspected?: (provider: string, verdict: string) => void;
  now?: () => Date;
}): SecretService {
  const { db, prepared, userDataKeys, fingerprintKey } = deps;
  const forUse = secretsRepo.createSecretForUseLookup(prepared);
  const now = deps.now ?? (() => new Date());
  // Without a registry (unit tests of storage alone) a secret stored without a grant gets none.
  const defaultGrant = (provider: string): OperationClass[] =>
    normalizeGrant(deps.providers?.defaultGrant(provider) ?? []);
  /** The grant a stored row stands for: its own (checked by its head on open) or its provider's default. */
  const grantOf = (secret: { provider: string; grant: readonly string[] | null }): OperationClass[] =>
    secret.grant === null ? defaultGrant(secret.provider) : secret.grant.filter(isOperationClass);

  function checkProvider(input: PutSecretInput): void {
    if (deps.providers === undefined) return;
    // An OAuth provider's secrets are connections: their tokens come from the provider through
    // the connect flow (with their state beside them), never pasted in by a caller.
    const oauth = deps.providers.isOAuth?.(input.provider) === true;
    if (oauth && input.connection === undefined) {
      throw new BrokerError(
        "failed_precondition",
        `provider ${input.provider} is connected with OAuth (StartConnection); its tokens cannot be stored directly`,
      );
    }
    if (!oauth && input.connection !== undefined) {
      throw new BrokerError("internal", "internal error", {
        cause: new Error("a connection for a provider without oauth settings"),
      });
    }
    const required = deps.providers.requiredFields(input.provider);
    if (required === undefined) throw new BrokerError("invalid_argument", "unknown provider");
    const missing = required.filter((name) => !input.fields.has(name));
    if (missing.length > 0) {
      throw new BrokerError(
        "invalid_argument",
        `provider ${input.provider} needs fields: ${missing.join(", ")}`,
      );
    }
  }

  function openHint(key: Buffer, userRef: Buffer, secret: secretsRepo.StoredSecret): string {
    const hint = open(key, secret.hintCiphertext, currentBinding(key, userRef, secret, "hint"));
    const text = hint.toString("utf8");
    hint.fill(0);
    return text;
  }

  function toMetadata(key: Buffer, userRef: Buffer, secret: secretsRepo.StoredSecret): SecretMetadata {
    return {
      id: secret.id,
      provider: secret.provider,
      label: secret.label,
      version: secret.version,
      fieldNames: secret.fieldNames,
      hint: openHint(key, userRef, secret),
      fingerprint: secret.fingerprint,
      createdAt: secret.createdAt,
      updatedAt: secret.updatedAt,
      lastUsedAt: secret.lastUsedAt,
      inspection: secret.inspection,
      grant: grantOf(secret),
      connection: secret.connection,
    };
  }

  async function inspectKey(
    provider: string,
    secretId: string,
    fields: ReadonlyMap<string, Buffer>,
    signal: AbortSignal,
  ): Promise<KeyInspection | undefined> {
    if (deps.inspector === undefined) return undefined;
    const result = await deps.inspector.inspect({ providerId: provider, secretId, fields }, signal);
    deps.onInspected?.(provider, result.verdict);
    return result;
  }

  return {
    async put(user, input, signal) {
      checkProvider(input);
      // Before anything is stored: a key that can move funds out or manage credentials is
      // refused here (unless its provider is relaxed), and an unreachable provider stores nothing.
      let inspected: KeyInspection | undefined;
      try {
        // A new version of a secret that is absent or another user's is refused before the key
        // is sent anywhere (the write below checks again, under the row lock).
        if (input.secretId !== undefined && deps.inspector !== undefined) {
          const existing = await forUse.find(user.userRef, input.secretId);
          if (existing === undefined) throw new BrokerError("not_found", NOT_FOUND);
          if (existing.secret.provider !== input.provider) {
            throw new BrokerError("invalid_argument", "a secret's provider cannot change");
          }
        }
        inspected = await inspectKey(input.provider, input.secretId ?? randomUUID(), input.fields, signal);
      } catch (err) {
        for (const value of input.fields.values()) value.fill(0);
        throw err;
      }
      if (inspected?.verdict === "refused") {
        for (const value of input.fields.values()) value.fill(0);
        throw new BrokerError("failed_precondition", inspected.messages.join("; "));
      }
      const inspection = inspected === undefined ? undefined : storedInspection(inspected);
      const userRef = user.userRef;
      const plaintext = encodeFields(input.fields);
      const hint = Buffer.from(maskedHint(primaryField(input.fields)), "utf8");
      for (const value of input.fields.values()) value.fill(0);
      let { key, stored: userKey } = await userDataKeys.forWrite(db, userRef, signal, pinSessionOf(user));
      try {
        const fingerprint = fingerprintFields(fingerprintKey, userRef, plaintext);
        const fieldNames = [...input.fields.keys()].sort();
        const at = now();
        // Empty means the provider's default, also when replacing a secret that had a wider one.
        const grant = input.grant === undefined ? defaultGrant(input.provider) : normalizeGrant(input.grant);
        let grantChange: GrantChange = "new";
        const write = () =>
          db.transaction().execute(async (trx): Promise<string | undefined> => {
            // A data-key rotation re-seals under the user's row lock: hold the same lock, and seal
            // only if the key unwrapped above is still the stored one, or this write would be lost.
            const locked = await lockUserKey(trx, userRef);
            if (
              locked === undefined ||
              !asBuffer(locked.wrappedDataKey).equals(asBuffer(userKey.wrappedDataKey))
            ) {
              return undefined;
            }
            let id: string;
            let version: number;
            let label: string;
            let wasBound = true;
            if (input.secretId === undefined) {
              if ((await secretsRepo.countSecrets(trx, userRef)) >= SECRET_LIMITS.maxSecretsPerUser) {
                throw new BrokerError(
                  "resource_exhausted",
                  `at most ${SECRET_LIMITS.maxSecretsPerUser} secrets per user`,
                );
              }
              id = randomUUID();
              version = 1;
              label = input.label ?? "";
              await secretsRepo.insertSecret(trx, {
                id,
                userRef,
                provider: input.provider,
                label,
                headMac: headMac(key, { secretId: id, userRef, provider: input.provider, version, grant }),
                grant,
                createdAt: at,
                ...(inspection === undefined ? {} : { inspection }),
              });
              grantChange = "new";
            } else {
              const existing = await secretsRepo.lockSecret(trx, userRef, input.secretId);
              if (existing === undefined) throw new BrokerError("not_found", NOT_FOUND);
              if (existing.provider !== input.provider) {
                throw new BrokerError("invalid_argument", "a secret's provider cannot change");
              }
              // A rolled-back pointer is refused here too (L1), rather than built upon. An unbound
              // (pre-L1) secret has nothing to check: this write binds it.
              checkHead(key, existing.headMac, {
                secretId: input.secretId,
                userRef,
                provider: existing.provider,
                version: existing.currentVersion,
                grant: existing.grant,
              });
              wasBound = existing.headMac !== null;
              // Compared with the grant the head just verified: a widening is audited as one.
              grantChange = compareGrants(grantOf(existing), grant);
              id = input.secretId;
              version = existing.currentVersion + 1;
              label = input.label ?? existing.label;
            }
            await secretsRepo.insertSecretVersion(trx, {
              secretId: id,
              version,
              ciphertext: seal(
                key,
                plaintext,
                bindingOf(id, userRef, input.provider, version, "fields", true),
              ),
              hintCiphertext: seal(key, hint, bindingOf(id, userRef, input.provider, version, "hint", true)),
              fingerprint,
              fieldNames,
              createdAt: at,
            });
            if (version > 1) {
              await secretsRepo.setCurrentVersion(trx, {
                secretId: id,
                version,
                headMac: headMac(key, { secretId: id, userRef, provider: input.provider, version, grant }),
                grant,
                label,
                at,
                ...(inspection === undefined ? {} : { inspection }),
              });
              await secretsRepo.pruneVersions(trx, id, version, SECRET_LIMITS.versionsKept);
            }
            // The connection state describes the version just written, in its transaction.
            if (input.connection !== undefined) {
              await setConnectionState(trx, id, version, input.connection);
            }
            const upgraded = wasBound
              ? 0
              : await bindKeptVersions(trx, key, userRef, id, input.provider, version);
            await addEncryptions(trx, userRef, 2 + 2 * upgraded);
            return id;
          });
        let secretId = await write();
        // Rotated or rewrapped meanwhile: take the key as it is stored now and write again.
        for (let attempt = 1; secretId === undefined; attempt += 1) {
          if (attempt >= 3)
            throw new BrokerError("unavailable", "the user's data key changed during the write; try again");
          key.fill(0);
          ({ key, stored: userKey } = await userDataKeys.forWrite(db, userRef, signal, pinSessionOf(user)));
          secretId = await write();
        }
        const stored = await forUse.find(userRef, secretId);
        if (stored === undefined) throw new BrokerError("not_found", NOT_FOUND);
        return { ...toMetadata(key, userRef, stored.secret), grantChange };
      } catch (err) {
        if (isUniqueViolation(err)) {
          throw new BrokerError("already_exists", "a secret with this provider and label already exists", {
            cause: err,
          });
        }
        throw err;
      } finally {
        key.fill(0);
        plaintext.fill(0);
      }
    },

    async list(user, query, signal) {
      const size = pageSizeOf(query, SECRETS_PAGE);
      const after = positionOfPageToken(secretsRepo.SECRETS_PAGE_KIND, query.pageToken);
      if (after !== undefined && !SECRET_ID.test(after.id)) {
        throw new BrokerError("invalid_argument", "page_token is not one this list issued");
      }
      const { secrets, userKey, nextPageToken } = await secretsRepo.listSecretsWithUserKey(
        prepared,
        user.userRef,
        { provider: query.provider, after, size },
      );
      if (userKey === undefined) return { secrets: [], nextPageToken: "" };
      const { key } = await userDataKeys.unwrap(user.userRef, userKey, signal, pinSessionOf(user));
      try {
        return { secrets: secrets.map((secret) => toMetadata(key, user.userRef, secret)), nextPageToken };
      } finally {
        key.fill(0);
      }
    },

    async delete(user, secretId) {
      // Absent and another user's answer alike (SPEC I4).
      if (!(await secretsRepo.deleteSecret(db, user.userRef, secretId))) {
        throw new BrokerError("not_found", NOT_FOUND);
      }
    },

    fetch,
    found,
    unseal,
    async inspect(user, sealed, signal) {
      const opened = await unseal(user, sealed, signal);
      let result: KeyInspection | undefined;
      try {
        result = await inspectKey(opened.provider, opened.id, opened.fields, signal);
      } finally {
        for (const value of opened.fields.values()) value.fill(0);
      }
      const { secret } = sealed;
      if (result === undefined) return toMetadataUnwrapping(user, sealed, secret, signal);
      const inspection = storedInspection(result);
      if (!(await secretsRepo.setInspection(db, user.userRef, secret.id, secret.version, inspection))) {
        throw new BrokerError("unavailable", "the secret changed during the inspection; try again");
      }
      return toMetadataUnwrapping(user, sealed, { ...secret, inspection }, signal);
    },
    async open(user, secretId, signal) {
      return unseal(user, await fetch(user, secretId), signal);
    },
  };

  async function toMetadataUnwrapping(
    user: UserIdentity,
    sealed: SealedSecret,
    secret: secretsRepo.StoredSecret,
    signal: AbortSignal,
  ): Promise<SecretMetadata> {
    const { key } = await userDataKeys.unwrap(user.userRef, sealed.userKey, signal, pinSessionOf(user));
    try {
      return toMetadata(key, user.userRef, secret);
    } finally {
      key.fill(0);
    }
  }

  async function fetch(user: UserIdentity, secretId: string): Promise<SealedSecret> {
    return found(await forUse.find(user.userRef, secretId));
  }

  function found(sealed: SealedSecret | undefined): SealedSecret {
    if (sealed === undefined) throw new BrokerError("not_found", NOT_FOUND);
    return sealed;
  }

  async function unseal(
    user: UserIdentity,
    sealed: SealedSecret,
    signal: AbortSignal,
  ): Promise<OpenedSecret> {
    const { secret } = sealed;
    const { key } = await userDataKeys.unwrap(user.userRef, sealed.userKey, signal, pinSessionOf(user));
    try {
      const binding = currentBinding(key, user.userRef, secret, "fields");
      const plaintext = open(key, asBuffer(secret.ciphertext), binding);
      try {
        return { id: secret.id, provider: secret.provider, fields: decodeFields(plaintext) };
      } finally {
        plaintext.fill(0);
      }
    } finally {
      key.fill(0);
    }
  }
}

function bindingOf(
  secretId: string,
  userRef: Buffer,
  provider: string,
  version: number,
  part: SecretBinding["part"],
  headBound: boolean,
): SecretBinding {
  return { secretId, userRef, provider, version, part, headBound };
}

/**
 * Checks that the stored pointer is one the broker set (catalogue L1: the head MAC, before any
 * decryption) and answers the binding the current version was sealed with. A secret without a
 * head was written before heads existed: its current version must then open as unbound, so a
 * head cleared by a database writer leaves a bound version that no longer opens (data_loss).
 */
function currentBinding(
  key: Buffer,
  userRef: Buffer,
  secret: secretsRepo.StoredSecret,
  part: SecretBinding["part"],
): SecretBinding {
  const { id: secretId, provider, version, headMac: stored, grant } = secret;
  checkHead(key, stored, { secretId, userRef, provider, version, grant });
  return bindingOf(secretId, userRef, provider, version, part, stored !== null);
}

/**
 * Verifies a stored head, with the grant it binds (SPEC I10): a row with a grant must have a head
 * covering it, so a grant written into a pre-L1 row, a widened grant, or a cleared grant (which
 * would fall back to the provider's default under a v1 head) are all data_loss. A row with neither
 * head nor grant is a secret stored before both: nothing to check here (its version opens unbound).
 */
function checkHead(
  key: Buffer,
  stored: Uint8Array | null,
  head: {
    secretId: string;
    userRef: Buffer;
    provider: string;
    version: number;
    grant: readonly string[] | null;
  },
): void {
  const { grant, ...rest } = head;
  if (stored === null) {
    if (grant !== null) {
      throw new BrokerError("data_loss", "stored secret failed its integrity check", {
        cause: new Error("a grant without a head"),
      });
    }
    return;
  }
  verifyHead(key, stored, grant === null ? rest : { ...rest, grant });
}

/**
 * The first write after L1 to a secret not yet bound also re-seals its kept older versions as
 * head-bound. Otherwise a database writer could clear the new head and point back at an older,
 * unbound version, which would still open as a legacy one. Each value must open as unbound (a
 * value that does not would be laundered by re-sealing it: data_loss). Returns how many versions.
 */
async function bindKeptVersions(
  trx: Kysely<Database>,
  key: Buffer,
  userRef: Buffer,
  secretId: string,
  provider: string,
  newVersion: number,
): Promise<number> {
  const older = await secretsRepo.listVersionsBelow(trx, secretId, newVersion);
  for (const v of older) {
    const rebound = (sealed: Uint8Array, part: SecretBinding["part"]): Buffer => {
      const plaintext = open(key, sealed, bindingOf(secretId, userRef, provider, v.version, part, false));
      try {
        return seal(key, plaintext, bindingOf(secretId, userRef, provider, v.version, part, true));
      } finally {
        plaintext.fill(0);
      }
    };
    await secretsRepo.replaceVersionCiphertexts(trx, secretId, {
      version: v.version,
      ciphertext: rebound(v.ciphertext, "fields"),
      hintCiphertext: rebound(v.hintCiphertext, "hint"),
    });
  }
  return older.length;
}

function primaryField(fields: ReadonlyMap<string, Buffer>): Buffer {
  for (const name of [...HINT_FIELDS, ...[...fields.keys()].sort()]) {
    const value = fields.get(name);
    if (value !== undefined) return value;
  }
  return Buffer.alloc(0);
}

function storedInspection(result: KeyInspection): secretsRepo.StoredInspection {
  const { verdict, permissions, dangerous, checkedAt } = result;
  return { verdict, permissions, dangerous, checkedAt };
}

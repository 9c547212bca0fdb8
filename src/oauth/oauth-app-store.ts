import type { Kysely } from "kysely";
import { BrokerError, invalidArgument } from "../errors.js";
import type { Keyring, KeyringCallOptions } from "../keys/keyring.js";
import { openUnderKeyring, sealUnderKeyring } from "../keys/keyring-sealed-value.js";
import { oauthAppContext } from "../keys/oauth-app-context.js";
import { findOAuthApp, listOAuthApps, writeOAuthApp } from "../store/oauth-apps.repository.js";
import type { Database } from "../store/schema.js";

/** A provider's OAuth client, opened for one token request. The caller zeroes `clientSecret`. */
export interface OAuthAppCredentials {
  readonly provider: string;
  readonly version: number;
  readonly clientId: string;
  readonly clientSecret: Buffer;
}

/** What an operator may see of an OAuth app: never the secret. */
export interface OAuthAppSummary {
  readonly provider: string;
  readonly version: number;
  readonly clientId: string;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

/** The broker's OAuth client registrations, sealed by the keyring in the database (issue 15 item 2). */
export interface OAuthAppStore {
  /** The provider's client; failed_precondition when none is configured. */
  get(provider: string, options?: KeyringCallOptions): Promise<OAuthAppCredentials>;
  /** Creates or replaces the provider's client (a new version). The store zeroes `clientSecret`. */
  set(provider: string, clientId: string, clientSecret: Buffer): Promise<OAuthAppSummary>;
  /** Replaces the secret (and, if given, the client id) of an existing client; not_found if none. */
  rotate(provider: string, clientSecret: Buffer, clientId?: string): Promise<OAuthAppSummary>;
  list(): Promise<OAuthAppSummary[]>;
  /** The provider's client without opening its secret (no KMS call); undefined when none. */
  describe(provider: string): Promise<OAuthAppSummary | undefined>;
}

/** Limits and shapes of client credentials (RFC 6749 appendix A.1/A.2: VSCHAR). */
export const OAUTH_APP_LIMITS = { maxClientIdChars: 256, maxClientSecretBytes: 1024 } as const;
const CLIENT_ID = /^[\x21-\x7e]{1,256}$/;

export function parseClientId(value: string): string {
  if (!CLIENT_ID.test(value)) {
    throw invalidArgument(
      `client id must be 1-${OAUTH_APP_LIMITS.maxClientIdChars} printable ASCII characters without spaces`,
    );
  }
  return value;
}

/** Checks a client secret's bytes without ever putting them in a message. */
export function checkClientSecret(secret: Uint8Array): void {
  if (secret.length === 0 || secret.length > OAUTH_APP_LIMITS.maxClientSecretBytes) {
    throw invalidArgument(`client secret must be 1-${OAUTH_APP_LIMITS.maxClientSecretBytes} bytes`);
  }
  for (const byte of secret) {
    if (byte < 0x21 || byte > 0x7e) {
      throw invalidArgument("client secret must be printable ASCII without spaces");
    }
  }
}

const WRITE_RETRIES = 3;

function summaryOf(app: OAuthAppSummary): OAuthAppSummary {
  const { provider, version, clientId, createdAt, updatedAt } = app;
  return { provider, version, clientId, createdAt, updatedAt };
}

export function createOAuthAppStore(deps: {
  readonly db: Kysely<Database>;
  readonly keyring: Keyring;
  /** Refuses providers the registry does not know or that have no `oauth` block. */
  readonly isOAuthProvider: (provider: string) => boolean;
  readonly now?: () => Date;
}): OAuthAppStore {
  const now = deps.now ?? (() => new Date());

  function checkProvider(provider: string): void {
    if (!deps.isOAuthProvider(provider)) {
      throw invalidArgument(`provider ${provider} has no oauth settings in the registry`);
    }
  }

  // Seals under the next version and compare-and-sets it; a concurrent writer makes us re-read.
  async function write(
    provider: string,
    clientSecret: Buffer,
    clientIdFor: (current: string | undefined) => string,
    mustExist: boolean,
  ): Promise<OAuthAppSummary> {
    try {
      checkProvider(provider);
      checkClientSecret(clientSecret);
      for (let attempt = 0; attempt < WRITE_RETRIES; attempt += 1) {
        const current = await findOAuthApp(deps.db, provider);
        if (mustExist && current === undefined) {
          throw new BrokerError("not_found", `no OAuth app is configured for ${provider}`);
        }
        const version = (current?.version ?? 0) + 1;
        const clientId = parseClientId(clientIdFor(current?.clientId));
        const sealed = await sealUnderKeyring(
          deps.keyring,
          oauthAppContext(provider, version, clientId),
          clientSecret,
        );
        const at = now();
        const stored = await writeOAuthApp(
          deps.db,
          {
            provider,
            version,
            clientId,
            wrappedKey: sealed.wrappedKey,
            masterKeyId: sealed.masterKeyId,
            secretCiphertext: sealed.ciphertext,
          },
          at,
        );
        if (stored) {
          return { provider, version, clientId, createdAt: current?.createdAt ?? at, updatedAt: at };
        }
      }
      throw new BrokerError("unavailable", "the OAuth app changed during the write; try again");
    } finally {
      clientSecret.fill(0);
    }
  }

  return {
    async get(provider, options) {
      const stored = await findOAuthApp(deps.db, provider);
      if (stored === undefined) {
        throw new BrokerError("failed_precondition", `no OAuth app is configured for ${provider}`);
      }
      const clientSecret = await openUnderKeyring(
        deps.keyring,
        oauthAppContext(stored.provider, stored.version, stored.clientId),
        {
          wrappedKey: stored.wrappedKey,
          masterKeyId: stored.masterKeyId,
          ciphertext: stored.secretCiphertext,
        },
        options,
      );
      return { provider: stored.provider, version: stored.version, clientId: stored.clientId, clientSecret };
    },
    set: (provider, clientId, clientSecret) => write(provider, clientSecret, () => clientId, false),
    rotate: (provider, clientSecret, clientId) =>
      write(provider, clientSecret, (current) => clientId ?? current ?? "", true),
    async list() {
      return (await listOAuthApps(deps.db)).map(summaryOf);
    },
    async describe(provider) {
      const stored = await findOAuthApp(deps.db, provider);
      return stored === undefined ? undefined : summaryOf(stored);
    },
  };
}

import { randomBytes, randomUUID } from "node:crypto";
import type { Kysely } from "kysely";
import type { AuditedRunner } from "../audit/audited-operation.js";
import type { CallerIdentity, UserIdentity } from "../auth/identity.js";
import { BrokerError, invalidArgument, isBrokerError } from "../errors.js";
import type { Keyring } from "../keys/keyring.js";
import { openUnderKeyring, sealUnderKeyring } from "../keys/keyring-sealed-value.js";
import { oauthPkceVerifierContext } from "../keys/oauth-app-context.js";
import type { Logger } from "../log/logger.js";
import { OAUTH_ACCESS_TOKEN_FIELD, OAUTH_REFRESH_TOKEN_FIELD } from "../outbound/oauth-registry-checks.js";
import type { Provider, ProviderRegistry } from "../outbound/provider-registry.js";
import type { SecretService } from "../secrets/secret-service.js";
import { consumeAuthorization, insertAuthorization } from "../store/oauth-authorizations.repository.js";
import type { Database } from "../store/schema.js";
import type { OAuthAppStore } from "./oauth-app-store.js";
import { isRandomToken, randomToken, s256Challenge, stateHash } from "./pkce.js";
import type { TokenEndpointClient, TokenSet } from "./token-endpoint-client.js";
import { isTokenEndpointError } from "./token-endpoint-errors.js";

/** What StartConnection asks for (already shape-checked by the handler). */
export interface StartConnectionInput {
  readonly provider: string;
  readonly scopes: readonly string[];
  readonly returnUrl: string;
  /** Reconnect: the user's existing connection that gets the new tokens as a new version. */
  readonly secretId?: string | undefined;
  readonly label?: string | undefined;
}

export interface StartedConnection {
  readonly authorizationUrl: string;
  readonly expiresAt: Date;
}

/**
 * The only words a failed connection sends back to the main app (in the return URL's `error`
 * parameter): a closed list, never a provider's text.
 */
export const CONNECT_ERRORS = [
  "access_denied",
  "state_expired",
  "provider_error",
  "provider_unavailable",
  "session_locked",
  "label_taken",
  "secret_not_found",
  "too_many_secrets",
  "internal_error",
] as const;
export type ConnectError = (typeof CONNECT_ERRORS)[number];

/** What the callback endpoint does with the browser. */
export type CallbackOutcome =
  | { readonly kind: "redirect"; readonly location: string }
  /** No pending authorization matches the state: there is no return URL to send anything to. */
  | { readonly kind: "bad_request" };

export interface CallbackQuery {
  readonly state: string | undefined;
  readonly code: string | undefined;
  readonly error: string | undefined;
}

export interface ConnectFlow {
  start(
    user: UserIdentity,
    caller: CallerIdentity,
    input: StartConnectionInput,
    signal: AbortSignal,
  ): Promise<StartedConnection>;
  complete(query: CallbackQuery, signal: AbortSignal): Promise<CallbackOutcome>;
}

export interface ConnectFlowDeps {
  readonly db: Kysely<Database>;
  readonly keyring: Keyring;
  readonly registry: ProviderRegistry;
  readonly apps: OAuthAppStore;
  readonly tokens: TokenEndpointClient;
  readonly secrets: Pick<SecretService, "put" | "fetch">;
  readonly audited: AuditedRunner;
  readonly logger: Logger;
  /** The broker's public callback URL, registered with every provider as the redirect URI. */
  readonly callbackUrl: string;
  /** Return URLs a caller key (by name) may send users back to; exact matches only. */
  readonly returnUrlsFor: (callerKeyName: string) => readonly string[];
  readonly stateTtlMs: number;
  readonly now?: () => Date;
}

const MAX_CODE_CHARS = 2048;

const verifierContext = oauthPkceVerifierContext;

/** Issue 15 item 3: StartConnection and the callback, with the user's tokens never leaving the broker. */
export function createConnectFlow(deps: ConnectFlowDeps): ConnectFlow {
  const now = deps.now ?? (() => new Date());
  const logger = deps.logger.child({ component: "oauth-connect" });

  function oauthProvider(
    id: string,
  ): Provider & { definition: { oauth: NonNullable<Provider["definition"]["oauth"]> } } {
    const provider = deps.registry.get(id);
    if (provider?.definition.oauth === undefined)
      throw invalidArgument(`provider ${id} has no OAuth connection`);
    return provider as Provider & { definition: { oauth: NonNullable<Provider["definition"]["oauth"]> } };
  }

  return {
    async start(user, caller, input, signal) {
      const provider = oauthProvider(input.provider);
      const oauth = provider.definition.oauth;
      if (input.scopes.length === 0) throw invalidArgument("scopes must name at least one scope");
      const allowed = new Set(oauth.scopes);
      const unknown = input.scopes.filter((s) => !allowed.has(s));
      if (unknown.length > 0) {
        throw invalidArgument(`scopes not offered for ${input.provider}: ${unknown.join(", ")}`);
      }
      if (!deps.returnUrlsFor(caller.name).includes(input.returnUrl)) {
        throw new BrokerError("permission_denied", "return_url is not allowed for this caller key");
      }
      if (input.secretId !== undefined) {
        const existing = await deps.secrets.fetch(user, input.secretId);
        if (existing.secret.provider !== input.provider) {
          throw invalidArgument("a reconnect must name a connection of the same provider");
        }
      }
      const app = await deps.apps.describe(input.provider);
      if (app === undefined) {
        throw new BrokerError("failed_precondition", `no OAuth app is configured for ${input.provider}`);
      }

      const state = randomToken();
      const verifier = randomToken();
      const hash = stateHash(state);
      const verifierBytes = Buffer.from(verifier, "ascii");
      const sealed = await sealUnderKeyring(deps.keyring, verifierContext(hash), verifierBytes, { signal });
      verifierBytes.fill(0);
      const expiresAt = new Date(now().getTime() + deps.stateTtlMs);
      await insertAuthorization(deps.db, {
        stateHash: hash,
        userRef: user.userRef,
        sessionRef: user.sessionRef ?? null,
        tokenIssuedAt: user.issuedAt ?? null,
        tokenExpiresAt: user.expiresAt,
        callerKeyId: caller.keyId,
        provider: input.provider,
        scopes: [...new Set(input.scopes)],
        returnUrl: input.returnUrl,
        secretId: input.secretId ?? null,
        label: input.label ?? null,
        wrappedKey: sealed.wrappedKey,
        masterKeyId: sealed.masterKeyId,
        verifierCiphertext: sealed.ciphertext,
        expiresAt,
      });

      const url = new URL(oauth.authorizationEndpoint);
      const params: Array<[string, string]> = [
        ["response_type", "code"],
        ["client_id", app.clientId],
        ["redirect_uri", deps.callbackUrl],
        ["scope", [...new Set(input.scopes)].join(oauth.scopeSeparator)],
        ["state", state],
        ["code_challenge", s256Challenge(verifier)],
        ["code_challenge_method", "S256"],
        ...Object.entries(oauth.authorizationParams ?? {}),
      ];
      for (const [name, value] of params) url.searchParams.append(name, value);
      return { authorizationUrl: url.href, expiresAt };
    },

    async complete(query, signal) {
      // The state is checked before anything else is read: no state, no return URL, plain 400.
      if (query.state === undefined || !isRandomToken(query.state)) return { kind: "bad_request" };
      const pending = await consumeAuthorization(deps.db, stateHash(query.state));
      if (pending === undefined) {
        logger.warn("oauth callback with an unknown, used or forged state");
        return { kind: "bad_request" };
      }
      const fail = (error: ConnectError): CallbackOutcome => ({
        kind: "redirect",
        location: withParam(pending.returnUrl, "error", error),
      });
      const actor = {
        requestId: `oauth_${randomUUID()}`,
        callerKeyId: pending.callerKeyId,
        userRef: pending.userRef,
      };
      if (pending.expiresAt.getTime() <= now().getTime()) {
        await deps.audited.finish(
          actor,
          { action: "oauth.connect", detail: { provider: pending.provider, reason: "state_expired" } },
          new BrokerError("failed_precondition", "the authorization expired"),
        );
        return fail("state_expired");
      }
      if (query.error !== undefined) {
        const reason = query.error === "access_denied" ? "access_denied" : "provider_error";
        await deps.audited.finish(
          actor,
          { action: "oauth.connect", detail: { provider: pending.provider, reason } },
          new BrokerError("permission_denied", "the user or the provider declined the authorization"),
        );
        return fail(reason);
      }
      const code = query.code;
      if (
        code === undefined ||
        code.length === 0 ||
        code.length > MAX_CODE_CHARS ||
        !/^[\x21-\x7e]+$/.test(code)
      ) {
        await deps.audited.finish(
          actor,
          { action: "oauth.connect", detail: { provider: pending.provider, reason: "provider_error" } },
          new BrokerError("invalid_argument", "the callback carries no usable code"),
        );
        return fail("provider_error");
      }

      try {
        const stored = await deps.audited.run(
          actor,
          {
            action: "oauth.connect",
            sensitive: true,
            detail: { provider: pending.provider },
            resultTarget: (r: { id: string }) => r.id,
            resultDetail: (r: { version: number; scopes: readonly string[] }) => ({
              secretVersion: r.version,
              permissions: r.scopes.join(","),
            }),
          },
          async () => {
            const provider = oauthProvider(pending.provider);
            const tokens = await exchange(provider, pending, code, signal);
            return storeTokens(provider, pending, tokens, signal);
          },
        );
        return { kind: "redirect", location: withParam(pending.returnUrl, "secret_id", stored.id) };
      } catch (err) {
        logger.warn({ err, provider: pending.provider }, "oauth connection failed");
        return fail(connectErrorOf(err));
      }
    },
  };

  async function exchange(
    provider: Provider,
    pending: {
      provider: string;
      stateHash: Uint8Array;
      wrappedKey: Uint8Array;
      masterKeyId: string;
      verifierCiphertext: Uint8Array;
    },
    code: string,
    signal: AbortSignal,
  ): Promise<TokenSet> {
    const verifier = await openUnderKeyring(
      deps.keyring,
      verifierContext(Buffer.from(pending.stateHash)),
      {
        wrappedKey: pending.wrappedKey,
        masterKeyId: pending.masterKeyId,
        ciphertext: pending.verifierCiphertext,
      },
      { signal },
    );
    const app = await deps.apps.get(pending.provider, { signal });
    try {
      const issued = await deps.tokens.exchangeCode({
        provider,
        app,
        code,
        codeVerifier: verifier,
        redirectUri: deps.callbackUrl,
        signal,
      });
      if (provider.definition.oauth?.longLivedExchange !== "facebook") return issued;
      // Facebook: the code gives a short-lived token; keep only the long-lived one.
      try {
        const longLived = await deps.tokens.exchangeLongLived({
          provider,
          app,
          accessToken: issued.accessToken,
          signal,
        });
        return { ...longLived, scopes: longLived.scopes ?? issued.scopes };
      } finally {
        issued.accessToken.fill(0);
        issued.refreshToken?.fill(0);
      }
    } finally {
      verifier.fill(0);
      app.clientSecret.fill(0);
    }
  }

  async function storeTokens(
    provider: Provider,
    pending: {
      provider: string;
      userRef: Uint8Array;
      sessionRef: Uint8Array | null;
      tokenIssuedAt: number | null;
      tokenExpiresAt: number;
      scopes: readonly string[];
      secretId: string | null;
      label: string | null;
    },
    tokens: TokenSet,
    signal: AbortSignal,
  ): Promise<{ id: string; version: number; scopes: readonly string[] }> {
    // The user as StartConnection saw them: a PIN user's unlocked session is found again by it.
    const user: UserIdentity = {
      userRef: Buffer.from(pending.userRef),
      expiresAt: pending.tokenExpiresAt,
      issuedAt: pending.tokenIssuedAt ?? undefined,
      sessionRef: pending.sessionRef === null ? undefined : Buffer.from(pending.sessionRef),
    };
    const fields = new Map<string, Buffer>([[OAUTH_ACCESS_TOKEN_FIELD, tokens.accessToken]]);
    if (tokens.refreshToken !== undefined) fields.set(OAUTH_REFRESH_TOKEN_FIELD, tokens.refreshToken);
    const scopes = tokens.scopes ?? [...pending.scopes].sort();
    const expiresAt =
      tokens.expiresInSeconds === undefined
        ? null
        : new Date(now().getTime() + tokens.expiresInSeconds * 1000);
    const label =
      pending.secretId !== null
        ? undefined
        : (pending.label ?? `${provider.definition.id} connection ${randomBytes(3).toString("hex")}`);
    // put() zeroes the field buffers once sealed.
    const stored = await deps.secrets.put(
      user,
      {
        secretId: pending.secretId ?? undefined,
        provider: provider.definition.id,
        label,
        fields,
        connection: { status: "active", expiresAt, scopes },
      },
      signal,
    );
    return { id: stored.id, version: stored.version, scopes };
  }
}

/** Appends one parameter to an allowlisted return URL (which may have a query of its own). */
function withParam(returnUrl: string, name: string, value: string): string {
  const url = new URL(returnUrl);
  url.searchParams.append(name, value);
  return url.href;
}

function connectErrorOf(err: unknown): ConnectError {
  if (isTokenEndpointError(err)) {
    return err.failure === "provider_unavailable" ? "provider_unavailable" : "provider_error";
  }
  if (!isBrokerError(err)) return "internal_error";
  if (err.reason === "session_locked") return "session_locked";
  switch (err.code) {
    case "already_exists":
      return "label_taken";
    case "not_found":
      return "secret_not_found";
    case "resource_exhausted":
      return "too_many_secrets";
    default:
      return "internal_error";
  }
}

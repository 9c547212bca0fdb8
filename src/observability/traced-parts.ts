import type { AuditLog } from "../audit/audit-log.js";
import type { CallerAuthenticator } from "../auth/caller-authenticator.js";
import type { TokenVerifier } from "../auth/token-verifier.js";
import type { Keyring } from "../keys/keyring.js";
import type { OutboundClient } from "../outbound/outbound-client.js";
import { httpMethodAttribute, type Tracing } from "./tracing.js";

/*
 * The same parts, each call inside a span. Installed by the composition root only when tracing
 * is on. What a span records is chosen here, from fixed names: a verb, a statement name, a
 * provider id, an audit action, a status number. Never an argument's value: no token, caller key,
 * encryption context (it holds user refs), wrapped key, secret id, path or header (SPEC I7).
 */

/** Token verification (RS256, or the token cache). */
export function tracedTokenVerifier(tokens: TokenVerifier, tracing: Tracing): TokenVerifier {
  return {
    verify: (token, options) =>
      tracing.span("keybroker.token.verify", {}, () => tokens.verify(token, options)),
    forget: (matches) => tokens.forget(matches),
  };
}

/** The caller key check (one indexed lookup, or its cache). */
export function tracedCallerAuthenticator(
  callers: CallerAuthenticator,
  tracing: Tracing,
): CallerAuthenticator {
  return {
    ...callers,
    authenticate: (rawKey, scope, transport) =>
      tracing.span("keybroker.caller_key.check", {}, () => callers.authenticate(rawKey, scope, transport)),
  };
}

/** Audit rows: the span lasts until the row is committed (or, deferred, queued to be). */
export function tracedAuditLog(audit: AuditLog, tracing: Tracing): AuditLog {
  return {
    record: (event, options) =>
      tracing.span("keybroker.audit.record", { "keybroker.audit.action": event.action }, () =>
        audit.record(event, options),
      ),
    recordReading: (event, read, options) =>
      tracing.span("keybroker.audit.record", { "keybroker.audit.action": event.action }, () =>
        audit.recordReading(event, read, options),
      ),
    flush: () => audit.flush(),
    close: () => audit.close(),
  };
}

/** KMS (or the local keyring) calls, by verb. */
export function tracedKeyring(keyring: Keyring, tracing: Tracing): Keyring {
  const client = "client" as const;
  return {
    kind: keyring.kind,
    currentKeyId: () => keyring.currentKeyId(),
    generateDataKey: (ctx, options) =>
      tracing.span(
        "keybroker.keyring.generate_data_key",
        { "keybroker.keyring.operation": "generate_data_key" },
        () => keyring.generateDataKey(ctx, options),
        client,
      ),
    decrypt: (wrapped, ctx, options) =>
      tracing.span(
        "keybroker.keyring.decrypt",
        { "keybroker.keyring.operation": "decrypt" },
        () => keyring.decrypt(wrapped, ctx, options),
        client,
      ),
    reEncrypt: (wrapped, ctx, destination, options) =>
      tracing.span(
        "keybroker.keyring.re_encrypt",
        { "keybroker.keyring.operation": "re_encrypt" },
        () => keyring.reEncrypt(wrapped, ctx, destination, options),
        client,
      ),
  };
}

/** Provider calls: provider id, method and response status, never the URL, path or headers. */
export function tracedOutboundClient(outbound: OutboundClient, tracing: Tracing): OutboundClient {
  const attributes = (providerId: string, method: string) => ({
    "keybroker.provider": providerId,
    "http.request.method": httpMethodAttribute(method),
  });
  return {
    call: (req, signal) =>
      tracing.span(
        "keybroker.upstream.call",
        attributes(req.providerId, req.method),
        async (span) => {
          const res = await outbound.call(req, signal);
          span.set("http.response.status_code", res.status);
          return res;
        },
        "client",
      ),
    // Until the response head: the body streams to the caller after the span ends.
    callStream: (req, signal) =>
      tracing.span(
        "keybroker.upstream.call",
        attributes(req.providerId, req.method),
        async (span) => {
          const res = await outbound.callStream(req, signal);
          span.set("http.response.status_code", res.status);
          return res;
        },
        "client",
      ),
    close: () => outbound.close(),
  };
}

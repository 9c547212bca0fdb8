import type { AuditedRunner } from "../../audit/audited-operation.js";
import { type CallerIdentity, PROXY_SCOPES } from "../../auth/identity.js";
import type { ProxyService as ProxyServiceDesc } from "../../gen/keybroker/v1/proxy_pb.js";
import { type ProxyCallInput, parseProxyCall } from "../../proxy/proxy-input.js";
import type {
  PlannedProxyCall,
  ProxiedResponse,
  ProxiedStreamResponse,
  ProxyCallScope,
  ProxyService,
} from "../../proxy/proxy-service.js";
import type { MisuseMonitor } from "../../signals/misuse-monitor.js";
import type { CallContext } from "../transport/call-context.js";
import type { ServiceHandlers } from "../transport/handlers.js";
import { actorOf } from "./audit-actor.js";
import type { UserCallGuard } from "./call-guard.js";
import { watchUse } from "./misuse-feed.js";

// The caller key's revocation is checked by the `started` row's own statement: no read per call
// (issue 17 item 2; catalogue B20 holds, a dead key's call is refused before anything runs).
const CHECK_AT_AUDIT = { liveness: "at-audit" } as const;

const toHeaders = (headers: ReadonlyArray<readonly [string, string]>) =>
  headers.map(([name, value]) => ({ name, value }));

// A use of a key: `started` is committed before anything is decrypted (I8). Never the path's
// concrete values, query, headers or bodies: only the method, the operation class (on every
// final row, a refusal's too: I10) and the upstream's status.
const auditSpec = (input: ProxyCallInput) => ({
  action: "proxy.call" as const,
  sensitive: true,
  target: input.secretId,
  detail: { method: input.method },
  readDetail: (planned: PlannedProxyCall) => ({
    provider: planned.provider,
    operationClass: planned.operationClass ?? "unclassified",
  }),
  resultDetail: (r: ProxiedResponse | ProxiedStreamResponse) => ({
    provider: r.provider,
    upstreamStatus: r.status,
    ...("redactions" in r && r.redactions !== undefined && r.redactions > 0
      ? { redactions: r.redactions }
      : {}),
  }),
});

const scopeOf = (ctx: CallContext, caller: CallerIdentity): ProxyCallScope => ({
  signal: ctx.signal,
  requestId: ctx.requestId,
  callerKeyId: caller.keyId,
  callerScopes: caller.scopes,
});

/**
 * Thin handlers: authorize (any proxy scope + the user's live token; the call's class is checked
 * against the key's scopes by the proxy service), parse, delegate (audited), convert.
 */
export function createProxyServiceHandlers(deps: {
  guard: UserCallGuard;
  proxy: ProxyService;
  audited: AuditedRunner;
  /** The misuse signals, fed one observation per finished call (absent: not watched). */
  signals?: MisuseMonitor | undefined;
}): ServiceHandlers<typeof ProxyServiceDesc> {
  const { guard, proxy, audited, signals } = deps;
  return {
    async call(request, ctx) {
      const { caller, user } = await guard.authorize(ctx, PROXY_SCOPES, CHECK_AT_AUDIT);
      const input = parseProxyCall(request);
      // The sealed row is read by the statement that commits `started` (one round trip, issue 17
      // item 2); nothing is decrypted before that commit returns (I8).
      const use = watchUse(signals, { caller, user, secretId: input.secretId });
      const response = await use
        .settled(
          audited.runReadingSecret(
            actorOf(ctx, caller, user),
            auditSpec(input),
            { userRef: user.userRef, secretId: input.secretId },
            (found) => use.planned(proxy.plan(user, input, found)),
            (planned) => proxy.call(user, input, planned, scopeOf(ctx, caller)),
          ),
        )
        .catch((err: unknown) => {
          guard.refusedAtAudit(ctx, PROXY_SCOPES, caller, err);
          throw err;
        });
      return { status: response.status, headers: toHeaders(response.headers), body: response.body };
    },
    async *callStream(request, ctx) {
      const { caller, user } = await guard.authorize(ctx, PROXY_SCOPES, CHECK_AT_AUDIT);
      const input = parseProxyCall(request);
      const use = watchUse(signals, { caller, user, secretId: input.secretId });
      const response = await use
        .settled(
          audited.runReadingSecret(
            actorOf(ctx, caller, user),
            auditSpec(input),
            { userRef: user.userRef, secretId: input.secretId },
            (found) => use.planned(proxy.plan(user, input, found)),
            (planned) => proxy.callStream(user, input, planned, scopeOf(ctx, caller)),
          ),
        )
        .catch((err: unknown) => {
          guard.refusedAtAudit(ctx, PROXY_SCOPES, caller, err);
          throw err;
        });
      yield {
        part: { case: "head", value: { status: response.status, headers: toHeaders(response.headers) } },
      };
      for await (const chunk of response.body) {
        yield { part: { case: "chunk", value: chunk } };
      }
    },
  };
}

/**
 * Fake SecretService and ProxyService handlers for transport tests: they know nothing of
 * secrets, they only make the transport's job observable. The request picks the behaviour:
 *
 * ListSecrets.provider: "fail:<code>" throws BrokerError(code) with a canary in its cause;
 * "crash" throws a plain Error with a canary in its message; "hang" waits for ctx.signal;
 * "slow:<ms>" answers after ms; "bad-response" returns a value that cannot be encoded;
 * "refuse:<reason>" refuses a credential as auth does (BrokerError with that RefusalReason);
 * anything else returns LISTED_SECRETS.
 * ProxyService.CallStream.path: "/refuse" refuses the caller key before any message;
 * "/fail-after-head" fails after the first message; "/hang" waits for ctx.signal after the
 * first message; anything else streams the body in chunks.
 */
import { setTimeout as delay } from "node:timers/promises";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { CallContext } from "../../../src/api/transport/call-context.js";
import { registerService, type ServiceRegistration } from "../../../src/api/transport/handlers.js";
import { BrokerError, type BrokerErrorCode, type RefusalReason } from "../../../src/errors.js";
import { type CallStreamResponseSchema, ProxyService } from "../../../src/gen/keybroker/v1/proxy_pb.js";
import { type ListSecretsResponseSchema, SecretService } from "../../../src/gen/keybroker/v1/secrets_pb.js";

/** Appears only in places that must never reach a client. */
export const CANARY = "CANARY-4f1d2a9e";

export const LISTED_SECRETS: MessageInitShape<typeof ListSecretsResponseSchema> = {
  secrets: [
    {
      id: "sec_1",
      provider: "binance",
      label: "main",
      version: 2,
      fieldNames: ["api_key", "api_secret"],
      hint: "…a9F3",
      fingerprint: "fp1",
      createdAt: { seconds: 1_700_000_000n, nanos: 0 },
    },
    { id: "sec_2", provider: "stripe", label: "ops", version: 1, fieldNames: ["api_key"] },
  ],
};

/** What the fake handlers saw, for assertions. */
export interface FakeRecorder {
  /** Every CallContext handed to a handler, in order. */
  readonly contexts: CallContext[];
  /** Resolves with the abort reason the next time a "hang" call's signal aborts. */
  nextAbort(): Promise<unknown>;
}

export interface FakeServices {
  readonly registrations: ServiceRegistration[];
  readonly recorder: FakeRecorder;
}

export function createFakeServices(): FakeServices {
  const contexts: CallContext[] = [];
  let abortWaiters: Array<(reason: unknown) => void> = [];

  async function waitForAbort(ctx: CallContext): Promise<never> {
    const reason = await new Promise<unknown>((resolve) => {
      if (ctx.signal.aborted) {
        resolve(ctx.signal.reason);
      } else {
        ctx.signal.addEventListener("abort", () => resolve(ctx.signal.reason), { once: true });
      }
    });
    const waiters = abortWaiters;
    abortWaiters = [];
    for (const waiter of waiters) {
      waiter(reason);
    }
    throw reason;
  }

  const secrets = registerService(SecretService, {
    async putSecret(request, ctx) {
      contexts.push(ctx);
      // Field names only: a value from `fields` must never come back.
      return {
        secret: {
          id: request.secretId || "sec_new",
          provider: request.provider,
          label: request.label,
          version: 1,
          fieldNames: Object.keys(request.fields).sort(),
        },
      };
    },
    async listSecrets(request, ctx) {
      contexts.push(ctx);
      const [kind, arg] = request.provider.split(":");
      switch (kind) {
        case "fail":
          throw new BrokerError(arg as BrokerErrorCode, `safe message for ${arg}`, {
            cause: new Error(`root cause ${CANARY}`),
          });
        case "refuse":
          throw refusal(arg as RefusalReason);
        case "crash":
          throw new Error(`database said ${CANARY}`);
        case "hang":
          return waitForAbort(ctx);
        case "slow":
          await delay(Number(arg));
          return { secrets: [{ id: "slow" }] };
        case "bad-response":
          // A uint32 cannot hold this; encoding fails after the handler returns.
          return { secrets: [{ id: CANARY, version: -1 }] };
        default:
          return LISTED_SECRETS;
      }
    },
    async deleteSecret(_request, ctx) {
      contexts.push(ctx);
      return {};
    },
    async listSecretUses(_request, ctx) {
      contexts.push(ctx);
      return { uses: [], nextPageToken: "" };
    },
    async inspectSecret(request, ctx) {
      contexts.push(ctx);
      return { secret: { id: request.secretId, inspection: { verdict: "none" } } };
    },
  });

  const proxy = registerService(ProxyService, {
    async call(request, ctx) {
      contexts.push(ctx);
      return { status: 200, headers: [{ name: "x-path", value: request.path }], body: request.body };
    },
    async *callStream(request, ctx) {
      contexts.push(ctx);
      if (request.path === "/refuse") {
        throw refusal("caller_key_invalid");
      }
      const head: MessageInitShape<typeof CallStreamResponseSchema> = {
        part: { case: "head", value: { status: 200, headers: [{ name: "x-path", value: request.path }] } },
      };
      yield head;
      if (request.path === "/fail-after-head") {
        throw new BrokerError("unavailable", "upstream went away", { cause: new Error(CANARY) });
      }
      if (request.path === "/hang") {
        await waitForAbort(ctx);
      }
      for (let offset = 0; offset < request.body.length; offset += 4) {
        yield { part: { case: "chunk", value: request.body.subarray(offset, offset + 4) } };
      }
    },
  });

  return {
    registrations: [secrets, proxy],
    recorder: {
      contexts,
      nextAbort: () => new Promise((resolve) => abortWaiters.push(resolve)),
    },
  };
}

/** A refusal as the auth layer builds it: scope and token-policy refusals are PERMISSION_DENIED. */
export function refusal(reason: RefusalReason): BrokerError {
  const denied: readonly RefusalReason[] = [
    "caller_key_scope_missing",
    "token_not_for_user",
    "token_wrong_client",
    "token_permission_missing",
  ];
  const code = denied.includes(reason) ? "permission_denied" : "unauthenticated";
  return new BrokerError(code, `refused: ${reason}`, { reason, cause: new Error(CANARY) });
}

import { performance } from "node:perf_hooks";
import type { Readable } from "node:stream";
import { type Dispatcher, Pool } from "undici";
import { BrokerError, isBrokerError } from "../errors.js";
import type { Logger } from "../log/logger.js";
import { createFieldRedactor, type FieldRedactor, redactInSlices } from "./field-redactor.js";
import { createGuardedConnector, type Dialer, type Resolver, systemResolver } from "./guarded-connector.js";
import { filterResponseHeaders } from "./header-policy.js";
import { createNonceSequencer, type SharedNonceCounter } from "./nonce-sequencer.js";
import type { Provider, ProviderRegistry } from "./provider-registry.js";
import {
  checkRequest,
  type OutboundRequest,
  type PlannedRequest,
  signRequest,
  signsNonce,
} from "./request-plan.js";
import { contentCodings, decodeContent, readCapped, scrubbedChunks } from "./response-body.js";
import { createScrubberInSlices, type Scrubber } from "./response-scrubber.js";
import { describeCause, toUpstreamError } from "./upstream-errors.js";

export type { OutboundRequest } from "./request-plan.js";

/** A buffered upstream reply, already scrubbed of every secret field. */
export interface OutboundResponse {
  status: number;
  headers: Array<[string, string]>;
  body: Buffer;
  /** Credential fields the provider declares that were replaced in the body (redactResponseFields). */
  redactions?: number;
}

/** A streamed upstream reply: head first, then scrubbed chunks (errors surface while iterating). */
export interface OutboundStreamResponse {
  status: number;
  headers: Array<[string, string]>;
  body: AsyncIterable<Buffer>;
}

/** The egress engine: calls a provider with a user's secret and returns only the scrubbed reply. */
export interface OutboundClient {
  call(req: OutboundRequest, signal: AbortSignal): Promise<OutboundResponse>;
  callStream(req: OutboundRequest, signal: AbortSignal): Promise<OutboundStreamResponse>;
  /** Closes every pool; later calls fail with unavailable. */
  close(): Promise<void>;
}

/** One settled upstream call, for metrics: provider id and outcome only, never the URL or headers. */
export interface UpstreamCallEvent {
  readonly provider: string;
  /** HTTP status, or undefined when no response head arrived. */
  readonly status: number | undefined;
  /** The BrokerError code of a failure, "abandoned" when the caller stopped reading; undefined on success. */
  readonly code: string | undefined;
  readonly durationMs: number;
  /** Response fields redacted (redactResponseFields), when the provider declares any. */
  readonly redactions?: number;
}

export interface OutboundClientDeps {
  readonly registry: ProviderRegistry;
  readonly logger: Logger;
  /** DNS; tests inject a fake. Defaults to the system resolver. */
  readonly resolve?: Resolver;
  /** Extra trusted CA, for a test upstream with a throwaway certificate. */
  readonly ca?: string | Buffer;
  /** Epoch milliseconds; drives HMAC timestamps and nonces. */
  readonly now?: () => number;
  /** Socket opener; tests wrap it to see which address was dialled. */
  readonly dial?: Dialer;
  /** Concurrent connections per provider origin. */
  readonly connectionsPerOrigin?: number;
  /** Requests of one nonce-signing secret that may wait behind the one in flight (F1). */
  readonly maxQueuedPerSecret?: number;
  /** The nonce counter and send order shared by every replica (Postgres); absent: this process. */
  readonly sharedNonces?: SharedNonceCounter | undefined;
  /** Told once per settled call (success, failure or abandonment); must be cheap. */
  readonly onUpstreamCall?: (event: UpstreamCallEvent) => void;
}

// Generous: Kraken's own rate limits refuse far fewer concurrent calls on one key; the bound
// only stops one caller from parking unbounded work behind a slow upstream.
const DEFAULT_MAX_QUEUED_PER_SECRET = 256;

type Outcome =
  | { readonly kind: "complete" }
  | { readonly kind: "abandoned" }
  | { readonly kind: "failed"; readonly err: unknown };

/** A request on the wire: the response head, and the scrubber for the secrets it carried. */
interface Sent {
  readonly res: Dispatcher.ResponseData;
  readonly scrubber: Scrubber;
}

interface Started {
  readonly status: number;
  readonly headers: Array<[string, string]>;
  /** The decoded body, NOT yet scrubbed or size-checked: read it through `maxBytes` and `scrubber`. */
  readonly body: Readable;
  readonly maxBytes: number;
  readonly scrubber: Scrubber;
  /** Removes the provider's declared credential fields, after scrubbing; undefined when none apply. */
  readonly redactor: FieldRedactor | undefined;
  /**
   * Ends the call once: logs the outcome, clears the deadline and, unless the body was read to
   * the end, aborts the upstream request. Returns the caller-safe error for a failure.
   */
  readonly settle: (outcome: Outcome, bytes: number) => BrokerError | undefined;
}

export function createOutboundClient(deps: OutboundClientDeps): OutboundClient {
  const now = deps.now ?? Date.now;
  const resolve = deps.resolve ?? systemResolver;
  const logger = deps.logger.child({ component: "outbound" });
  const nonces = createNonceSequencer({
    now,
    maxQueuedPerSecret: deps.maxQueuedPerSecret ?? DEFAULT_MAX_QUEUED_PER_SECRET,
    shared: deps.sharedNonces,
  });
  const pools = new Map<string, Pool>();
  let closed = false;

  // A metrics hook must never turn a settled call into a different outcome.
  const reportUpstreamCall = (event: UpstreamCallEvent): void => {
    if (deps.onUpstreamCall === undefined) return;
    try {
      deps.onUpstreamCall(event);
    } catch (err) {
      logger.error({ err, provider: event.provider }, "onUpstreamCall listener threw");
    }
  };

  // One keep-alive pool per provider (each provider has one origin), each with its own guarded
  // connector: the allowlist and loopback rule travel with the pool, not with each request.
  const poolFor = (provider: Provider): Pool => {
    const def = provider.definition;
    let pool = pools.get(def.id);
    if (pool === undefined) {
      pool = new Pool(provider.baseUrl.origin, {
        connect: createGuardedConnector({
          allowedHosts: def.allowedHosts,
          allowLoopback: def.allowLoopback === true,
          resolve,
          ...(deps.ca === undefined ? {} : { ca: deps.ca }),
          ...(deps.dial === undefined ? {} : { dial: deps.dial }),
          connectTimeoutMs: Math.min(def.timeoutMs, 10_000),
        }),
        connections: deps.connectionsPerOrigin ?? 16,
        pipelining: 1,
        keepAliveTimeout: 10_000,
        headersTimeout: def.timeoutMs,
        bodyTimeout: def.timeoutMs,
      });
      pools.set(def.id, pool);
    }
    return pool;
  };

  const start = async (req: OutboundRequest, signal: AbortSignal): Promise<Started> => {
    const began = performance.now();
    let status: number | undefined;
    if (closed) throw new BrokerError("unavailable", "outbound client is shutting down");
    if (signal.aborted) {
      throw isBrokerError(signal.reason)
        ? signal.reason
        : new BrokerError("deadline_exceeded", "call was cancelled before it was sent");
    }
    const provider = deps.registry.get(req.providerId);
    if (provider === undefined) throw new BrokerError("failed_precondition", "provider is not configured");

    const checked = checkRequest(provider, req);
    const { timeoutMs, maxResponseBytes } = provider.definition;
    // Set once the response head names its content type; read by `settle` for the count.
    let redactor: FieldRedactor | undefined;

    // One deadline for the whole exchange, body included: undici's body timeout is per chunk,
    // so a server dripping a byte at a time would never trip it (C33).
    const controller = new AbortController();
    const state = { timedOut: false, cancelled: false, done: false };
    const timer = setTimeout(() => {
      state.timedOut = true;
      controller.abort();
    }, timeoutMs);
    const onCallerAbort = (): void => {
      state.cancelled = true;
      controller.abort();
    };
    signal.addEventListener("abort", onCallerAbort, { once: true });

    const settle = (outcome: Outcome, bytes: number): BrokerError | undefined => {
      if (state.done) return undefined;
      state.done = true;
      clearTimeout(timer);
      signal.removeEventListener("abort", onCallerAbort);
      // Logged: provider, method, status, sizes, timings. Never the URL, query, headers or body.
      const logFields = {
        requestId: req.requestId,
        provider: req.providerId,
        method: checked.method,
        status,
        bytes,
      };
      const elapsedMs = performance.now() - began;
      const durationMs = Math.round(elapsedMs);
      const redactions = redactor === undefined ? {} : { redactions: redactor.redactions };
      if (outcome.kind === "complete") {
        // Success is the hot path: debug only (metrics carry the counts and latencies).
        logger.debug({ ...logFields, durationMs, ...redactions }, "outbound call finished");
        reportUpstreamCall({
          provider: req.providerId,
          status,
          code: undefined,
          durationMs: elapsedMs,
          ...redactions,
        });
        return undefined;
      }
      // Stop the upstream exchange; undici does not reuse a socket after an abort.
      controller.abort();
      if (outcome.kind === "abandoned") {
        logger.info({ ...logFields, durationMs }, "outbound stream abandoned by the caller");
        reportUpstreamCall({ provider: req.providerId, status, code: "abandoned", durationMs: elapsedMs });
        return undefined;
      }
      const err = outcome.err;
      const mapped = toUpstreamError(err, {
        method: checked.method,
        timedOut: state.timedOut,
        cancelled: state.cancelled,
        cancelReason: signal.reason,
      });
      logger.warn(
        { ...logFields, code: mapped.code, cause: describeCause(mapped), durationMs },
        "outbound call failed",
      );
      reportUpstreamCall({ provider: req.providerId, status, code: mapped.code, durationMs: elapsedMs });
      return mapped;
    };

    // Signs and sends; resolves at the response head. Nonce-signing requests take their nonce
    // in their turn and hold it until the upstream answered (nonce-sequencer.ts).
    const send = async (nonce: string | undefined): Promise<Sent> => {
      const plan: PlannedRequest = signRequest(checked, {
        now,
        nextNonce: () => {
          if (nonce === undefined) throw new BrokerError("internal", "internal error");
          return nonce;
        },
      });
      const scrubber = await createScrubberInSlices(plan.secrets);
      const res = await poolFor(provider).request({
        method: plan.method,
        path: plan.pathAndQuery,
        headers: plan.headers.flat(),
        body: plan.body.length > 0 ? plan.body : null,
        signal: controller.signal,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
      return { res, scrubber };
    };

    try {
      // The provider's deadline covers the wait for a turn too, so a queue behind a hung
      // upstream drains instead of growing.
      const { res, scrubber } = signsNonce(provider)
        ? await nonces.inTurn(req.secretId, { signal: controller.signal, maxWaitMs: timeoutMs }, send)
        : await send(undefined);
      // HEAD, 204, 304 and empty bodies may still name an encoding; there is nothing to decode.
      const declared = Number(single(res.headers["content-length"]) ?? Number.NaN);
      const hasBody =
        checked.method !== "HEAD" && res.statusCode !== 204 && res.statusCode !== 304 && declared !== 0;
      const encoding = hasBody ? res.headers["content-encoding"] : undefined;
      if (hasBody && contentCodings(encoding).length === 0 && declared > maxResponseBytes) {
        res.body.destroy();
        throw new BrokerError("resource_exhausted", "upstream response is larger than this provider allows");
      }
      // Names too (L3): an upstream may echo the key as a header NAME ("x-sk_live_...: 1").
      const headers = filterResponseHeaders(res.headers, (v) => scrubber.scrubText(v)).map(
        ([name, value]): [string, string] => [scrubber.scrubText(name), value],
      );
      const body = decodeContent(res.body, encoding);
      status = res.statusCode;
      const redactFields = provider.redaction?.fieldsFor(req.path);
      if (redactFields !== undefined)
        redactor = createFieldRedactor(redactFields, res.headers["content-type"]);
      return {
        status: res.statusCode,
        headers,
        body,
        maxBytes: maxResponseBytes,
        scrubber,
        redactor,
        settle,
      };
    } catch (err) {
      throw settle({ kind: "failed", err }, 0) ?? err;
    }
  };

  return {
    async call(req, signal) {
      const started = await start(req, signal);
      let body: Buffer;
      try {
        // Buffered: the whole (capped) body is scrubbed in one pass, a slice at a time so other
        // calls run in between (H1); it finds exactly what the stream scrubber finds.
        body = await started.scrubber.scrubInSlices(await readCapped(started.body, started.maxBytes));
        // Declared credential fields go after the stored secret's encodings (redactResponseFields).
        if (started.redactor !== undefined) body = await redactInSlices(started.redactor, body);
      } catch (err) {
        throw started.settle({ kind: "failed", err }, 0) ?? err;
      }
      started.settle({ kind: "complete" }, body.length);
      const redactions = started.redactor === undefined ? {} : { redactions: started.redactor.redactions };
      return { status: started.status, headers: started.headers, body, ...redactions };
    },

    async callStream(req, signal) {
      const started = await start(req, signal);
      const chunks = scrubbedChunks(started.body, started.maxBytes, started.scrubber);
      const { redactor } = started;
      async function* body(): AsyncGenerator<Buffer, void, undefined> {
        let bytes = 0;
        try {
          // Scrubbed chunks are at most a slice long (response-body.ts), so redacting each one
          // holds the event loop no longer than scrubbing it; a body that cannot be redacted
          // ends the stream with an error before the offending bytes are sent.
          for await (const scrubbed of chunks) {
            const chunk = redactor === undefined ? scrubbed : redactor.push(scrubbed);
            if (chunk.length === 0) continue;
            bytes += chunk.length;
            yield chunk;
          }
          const tail = redactor?.flush();
          if (tail !== undefined && tail.length > 0) {
            bytes += tail.length;
            yield tail;
          }
          started.settle({ kind: "complete" }, bytes);
        } catch (err) {
          throw started.settle({ kind: "failed", err }, bytes) ?? err;
        } finally {
          // Reached without settling only when the consumer stopped early: abort the upstream.
          started.settle({ kind: "abandoned" }, bytes);
        }
      }
      return { status: started.status, headers: started.headers, body: body() };
    },

    async close() {
      closed = true;
      const all = [...pools.values()];
      pools.clear();
      await Promise.all(all.map((p) => p.destroy()));
    },
  };
}

function single(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

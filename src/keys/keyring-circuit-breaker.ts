import { BrokerError, isBrokerError } from "../errors.js";
import type { Keyring } from "./keyring.js";

export interface KeyringCircuitBreakerOptions {
  /** Consecutive `unavailable` calls that open the breaker. */
  readonly failureThreshold: number;
  /** How long it stays open before one probe call is let through. */
  readonly openMs: number;
  /** Clock, for tests. */
  readonly now?: () => number;
  /** Told when the breaker opens or closes again (a log line for operators). */
  readonly onStateChange?: (state: "open" | "closed") => void;
}

type Outcome = "ok" | "failed" | "neutral";

// Only `unavailable` is the KMS failing; a caller's own deadline is neither up nor down; any
// other answer (a refusal, a tampered row) means the KMS answered.
function outcomeOf(err: unknown): Outcome {
  if (!isBrokerError(err)) return "ok";
  if (err.code === "unavailable") return "failed";
  return err.code === "deadline_exceeded" ? "neutral" : "ok";
}

type State =
  | { readonly kind: "closed"; readonly failures: number }
  | { readonly kind: "open"; readonly until: number }
  | { readonly kind: "probing" };

/**
 * Fails fast with UNAVAILABLE while the keyring is known to be down (F6). Without it, each new
 * user's call waits out the KMS client's attempts and timeouts before failing, however many
 * calls before it already found KMS hung, and piles sockets onto a KMS that is not answering.
 *
 * After `failureThreshold` consecutive calls end `unavailable` (the KMS client's own bounded
 * retries included: one call is one failure), the breaker opens for `openMs`: calls are refused
 * at once without reaching the KMS. Then ONE call is let through as a probe (half-open) while
 * the others keep failing fast; its outcome closes the breaker or opens it for another `openMs`.
 *
 * Only `unavailable` counts: a refusal the KMS answered (disabled key, access denied, a
 * tampered row) proves it is up, and a caller giving up on its own deadline says nothing about
 * the KMS (a caller with tiny deadlines must not be able to trip the breaker for everyone).
 * State is per process: each replica learns about an outage from its own calls. Users whose
 * data key is cached never reach the keyring, so they are unaffected.
 */
export function createKeyringCircuitBreaker(
  keyring: Keyring,
  options: KeyringCircuitBreakerOptions,
): Keyring {
  const now = options.now ?? Date.now;
  let state: State = { kind: "closed", failures: 0 };

  function admit(): "call" | "probe" {
    if (state.kind === "closed") return "call";
    if (state.kind === "open" && now() >= state.until) {
      state = { kind: "probing" };
      return "probe";
    }
    throw new BrokerError("unavailable", "key management service unavailable", {
      cause: new Error("the keyring's circuit breaker is open after repeated failures"),
    });
  }

  function settle(admitted: "call" | "probe", outcome: Outcome): void {
    if (admitted === "probe") {
      if (outcome === "ok") options.onStateChange?.("closed");
      state =
        outcome === "ok"
          ? { kind: "closed", failures: 0 }
          : // A probe whose caller gave up taught nothing: the next call probes again.
            { kind: "open", until: outcome === "failed" ? now() + options.openMs : now() };
      return;
    }
    // Calls admitted before the breaker opened may still be finishing: they do not reset it.
    if (state.kind !== "closed" || outcome === "neutral") return;
    if (outcome === "ok") {
      state = { kind: "closed", failures: 0 };
      return;
    }
    const failures = state.failures + 1;
    if (failures >= options.failureThreshold) {
      state = { kind: "open", until: now() + options.openMs };
      options.onStateChange?.("open");
    } else {
      state = { kind: "closed", failures };
    }
  }

  async function guarded<T>(call: () => Promise<T>): Promise<T> {
    const admitted = admit();
    try {
      const result = await call();
      settle(admitted, "ok");
      return result;
    } catch (err) {
      settle(admitted, outcomeOf(err));
      throw err;
    }
  }

  return {
    kind: keyring.kind,
    currentKeyId: () => keyring.currentKeyId(),
    generateDataKey: (context, opts) => guarded(() => keyring.generateDataKey(context, opts)),
    decrypt: (wrapped, context, opts) => guarded(() => keyring.decrypt(wrapped, context, opts)),
    reEncrypt: (wrapped, context, destinationKeyId, opts) =>
      guarded(() => keyring.reEncrypt(wrapped, context, destinationKeyId, opts)),
  };
}
